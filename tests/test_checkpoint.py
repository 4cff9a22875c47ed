"""Checkpoints and resume: an interrupted run (in-process, or a subprocess killed with SIGKILL at random
moments, including in the middle of checkpoint writes) resumes to bitwise the weights, history and
best-iteration choice of an uninterrupted run; foreign checkpoints are refused with one line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from admm_snn.admm.settings import ADMMSettings
from admm_snn.errors import CheckpointError
from admm_snn.io import CHECKPOINT_FORMAT, load_model, read_safetensors
from admm_snn.train import CHECKPOINT, load_checkpoint, train

TIMINGS = ("seconds", "wall_s", "report_s")

pytestmark = pytest.mark.determinism


def _problem(n=48, T=6, n_in=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, n, n_in, generator=g) < 0.3).float()
    labels = torch.arange(n) % 3
    val_frames = (torch.rand(T, 24, n_in, generator=g) < 0.3).float()
    return frames, labels, (val_frames, torch.arange(24) % 3)


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in path.read_text().splitlines()]


def _strip(history):
    return [{k: v for k, v in m.items() if k not in TIMINGS} for m in history]


@pytest.mark.parametrize("schedule,init", [("parallel", "forward"), ("sequential", "uniform")])
def test_resume_in_process_is_bitwise(tmp_path, schedule, init):
    X, lab, val = _problem()
    s = ADMMSettings(iterations=6, warmup=2, schedule=schedule, init=init, seed=5)
    a = train(X, lab, [8], s, val=val, out=tmp_path / "a", checkpoint_every=1, progress=False)
    part = train(X, lab, [8], s.replace(iterations=3), val=val, out=tmp_path / "b", checkpoint_every=1,
                 progress=False)
    b = train(X, lab, [8], s, val=val, out=tmp_path / "b", checkpoint_every=1, resume=True, progress=False)
    for wa, wb in zip(a.final_weights, b.final_weights):
        assert torch.equal(wa, wb)
    for wa, wb in zip(a.weights, b.weights):  # best-validation weights
        assert torch.equal(wa, wb)
    assert a.best_iteration == b.best_iteration
    assert _strip(a.history) == _strip(b.history)
    assert _metrics(tmp_path / "a" / "metrics.jsonl") == _metrics(tmp_path / "b" / "metrics.jsonl")
    assert [m["iteration"] for m in _metrics(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    # wall time and compute time accumulate over both sessions
    assert b.wall_s >= part.wall_s
    assert b.history[-1]["wall_s"] >= part.history[-1]["wall_s"]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["wall_s"] == pytest.approx(b.wall_s)
    for wa, wb in zip(load_model(tmp_path / "a")["weights"], load_model(tmp_path / "b")["weights"]):
        assert torch.equal(wa, wb)


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path, monkeypatch):
    """A run stopped between writing metrics and the next checkpoint: on resume metrics.jsonl is rebuilt
    from the checkpoint's history, so no line is duplicated."""
    import importlib
    T = importlib.import_module("admm_snn.train")  # admm_snn.train is the function (public API)
    X, lab, val = _problem()
    s = ADMMSettings(iterations=6, warmup=2, seed=1)
    ref = train(X, lab, [8], s, val=val, out=tmp_path / "ref", checkpoint_every=2, progress=False)
    real = T.save_checkpoint

    def stop_at_5(out, state, *args, **kw):
        if state.iteration == 5:
            raise KeyboardInterrupt  # as if killed right after iteration 5's metrics line
        return real(out, state, *args, **kw)

    monkeypatch.setattr(T, "save_checkpoint", stop_at_5)
    s1 = s.replace()
    with pytest.raises(KeyboardInterrupt):
        train(X, lab, [8], s1, val=val, out=tmp_path / "run", checkpoint_every=1, progress=False)
    assert len(_metrics(tmp_path / "run" / "metrics.jsonl")) == 5
    monkeypatch.setattr(T, "save_checkpoint", real)
    res = train(X, lab, [8], s, val=val, out=tmp_path / "run", checkpoint_every=1, resume=True, progress=False)
    assert _metrics(tmp_path / "run" / "metrics.jsonl") == _metrics(tmp_path / "ref" / "metrics.jsonl")
    for wa, wb in zip(ref.final_weights, res.final_weights):
        assert torch.equal(wa, wb)


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_foreign_checkpoints_are_refused(tmp_path):
    X, lab, val = _problem()
    s = ADMMSettings(iterations=2, warmup=1)
    out = tmp_path / "run"
    train(X, lab, [8], s, out=out, checkpoint_every=1, progress=False)
    cases = {
        "rho": lambda: train(X, lab, [8], s.replace(rho=2.0), out=out, resume=True, progress=False),
        "network": lambda: train(X, lab, [9], s, out=out, resume=True, progress=False),
        "data": lambda: train(X, (lab + 1) % 3, [8], s, out=out, resume=True, progress=False),
        "data ": lambda: train(X[:, :40], lab[:40], [8], s, out=out, resume=True, progress=False),
    }
    for what, call in cases.items():
        with pytest.raises(CheckpointError) as e:
            call()
        msg = _one_line(e)
        assert CHECKPOINT in msg, what
    # another format version
    path = out / CHECKPOINT
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT)
    save_file(tensors, str(path), metadata={**meta, "version": "0"})
    with pytest.raises(CheckpointError) as e:
        train(X, lab, [8], s, out=out, resume=True, progress=False)
    assert "version '0'" in _one_line(e)
    # not a checkpoint at all (a model file in its place)
    save_file({"W1": torch.zeros(2, 2)}, str(path), metadata={"format": "admm-snn-model", "version": "1"})
    with pytest.raises(CheckpointError) as e:
        train(X, lab, [8], s, out=out, resume=True, progress=False)
    assert "not an admm-snn-checkpoint" in _one_line(e)
    # header right, a tensor of the wrong shape
    save_file({**tensors, "weights.0": torch.zeros(3, 3)}, str(path), metadata=meta)
    with pytest.raises(CheckpointError) as e:
        train(X, lab, [8], s, out=out, resume=True, progress=False)
    assert "weights.0" in _one_line(e)
    # no checkpoint at all
    with pytest.raises(CheckpointError) as e:
        train(X, lab, [8], s, out=tmp_path / "empty", resume=True, progress=False)
    assert "without --resume" in _one_line(e)
    assert not (tmp_path / "empty").exists()  # a failed resume creates nothing


def test_checkpoint_from_older_settings_schema_is_accepted(tmp_path):
    """A setting added to ADMMSettings after the checkpoint was written counts as its default."""
    X, lab, _ = _problem()
    s = ADMMSettings(iterations=3, warmup=1)
    out = tmp_path / "run"
    train(X, lab, [8], s.replace(iterations=2), out=out, checkpoint_every=1, progress=False)
    path = out / CHECKPOINT
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT)
    settings = json.loads(meta["settings"])
    settings.pop("eps")  # pretend the checkpoint predates the field; this run uses its default
    save_file(tensors, str(path), metadata={**meta, "settings": json.dumps(settings)})
    assert load_checkpoint(out, s, [20, 8, 3], meta["data"], "cpu").state.iteration == 2
    with pytest.raises(CheckpointError):
        load_checkpoint(out, s.replace(eps=1e-3), [20, 8, 3], meta["data"], "cpu")


def test_written_files_have_normal_permissions(tmp_path):
    X, lab, _ = _problem()
    train(X, lab, [4], ADMMSettings(iterations=1, warmup=0), out=tmp_path, checkpoint_every=1, progress=False)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", CHECKPOINT, "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------------
# A real process killed with SIGKILL at random moments
# ------------------------------------------------------------------------------------------------------

TRAIN = [sys.executable, "-m", "admm_snn.cli", "train", "--dataset", "nmnist", "--limit", "30", "--time-steps", "8",
         "--hidden", "8", "--iterations", "12", "--warmup", "3", "--checkpoint-every", "1", "--quiet"]


def _launch(data: list, out: Path, *extra, delay: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, ADMM_SNN_TEST_SAVE_DELAY=str(delay) if delay else "")
    return subprocess.Popen([*TRAIN, *data, "--out", str(out), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _temporaries(out: Path) -> list[Path]:
    return list(out.glob(".checkpoint.safetensors.*.tmp")) + list(out.glob(".model.safetensors.*.tmp"))


def _wait_for_progress(proc, out: Path, mtime0, stale, timeout=60.0) -> bool:
    """Until this process has started writing checkpoints (a new temp file, or a new checkpoint)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and proc.poll() is None:
        ck = out / CHECKPOINT
        if _new_temporaries(out, stale) or (ck.exists() and ck.stat().st_mtime_ns != mtime0):
            return True
        time.sleep(0.002)
    return False


def _new_temporaries(out: Path, stale: set) -> set:
    """Temp files of a write in progress (not those a previously killed run left behind)."""
    return set(_temporaries(out)) - stale


def _weights(out: Path) -> tuple[list, list]:
    model = load_model(out)["weights"]
    ck = load_file(str(out / CHECKPOINT))
    return model, [ck[k] for k in sorted(k for k in ck if k.startswith("weights."))]


def test_sigkill_at_random_moments_then_resume_is_bitwise(tmp_path, nmnist_root):
    """`admm-snn train` on 30 real N-MNIST recordings, killed with SIGKILL twice (once exactly while a
    checkpoint is being written, once at a random moment), then resumed to the end; compared with the
    same command run without interruption (in this process, in a thread, while the others run)."""
    seed = int(os.environ.get("ADMM_SNN_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    ref_dir, out = tmp_path / "ref", tmp_path / "killed"
    data = ["--data-dir", str(nmnist_root), "--cache-dir", str(tmp_path / "cache")]
    from admm_snn.cli import main
    from admm_snn.data import FrameSettings, load_nmnist
    load_nmnist(nmnist_root, "train", FrameSettings(8, 10.0, 10.0), cache_dir=tmp_path / "cache", limit=30)
    reference = {}
    thread = threading.Thread(target=lambda: reference.update(rc=main([*TRAIN[3:], *data, "--out", str(ref_dir)])))
    thread.start()
    log = []
    started = False
    for round_ in range(2):
        ck = out / CHECKPOINT
        mtime0 = ck.stat().st_mtime_ns if ck.exists() else None
        resume = ck.exists()
        stale = set(_temporaries(out))
        proc = _launch(data, out, *(["--resume"] if resume else []), delay=0.01)
        if not _wait_for_progress(proc, out, mtime0, stale):
            proc.wait(timeout=60)
            log.append((round_, "finished before the kill", proc.returncode))
            assert proc.returncode == 0, proc.stderr.read()
            break
        if round_ == 0:
            # one kill exactly while a checkpoint is being written (temp file complete, not yet renamed)
            t_end = time.monotonic() + 10
            while not _new_temporaries(out, stale) and time.monotonic() < t_end and proc.poll() is None:
                time.sleep(0.001)
            pause = 0.0
        else:
            pause = rng.uniform(0.0, 0.3)
            time.sleep(pause)
        during_write = bool(_new_temporaries(out, stale))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        started = True
        it = None
        if ck.exists():  # whatever moment the kill hit, the checkpoint on disk is complete
            tensors, meta = read_safetensors(ck, CHECKPOINT_FORMAT)
            it = int(meta["iteration"])
            assert it >= 1
        log.append((round_, f"killed after {pause:.3f}s at checkpoint {it}",
                    "during a write" if during_write else ""))
    final = _launch(data, out, *(["--resume"] if (out / CHECKPOINT).exists() else []))
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, f"seed {seed}: {stderr}"
    thread.join(timeout=300)
    assert reference.get("rc") == 0, "the uninterrupted reference run failed"
    print(f"\nSIGKILL test seed {seed}: {log}")
    assert started, f"seed {seed}: no run was killed: {log}"
    assert any("during a write" in entry[2] for entry in log if len(entry) == 3 and isinstance(entry[2], str)), log

    (ref_model, ref_ck), (model, ckw) = _weights(ref_dir), _weights(out)
    for a, b in zip(ref_model + ref_ck, model + ckw):
        assert torch.equal(a, b), f"seed {seed}: weights differ after resume"
    assert _metrics(out / "metrics.jsonl") == _metrics(ref_dir / "metrics.jsonl")
    assert [m["iteration"] for m in _metrics(out / "metrics.jsonl")] == list(range(1, 13))
    best = [json.loads((d / "summary.json").read_text())["best_iteration"] for d in (out, ref_dir)]
    assert best[0] == best[1]
    assert not _temporaries(out)


def test_frames_at_an_unaligned_address_train_bitwise_like_aligned_ones():
    """Frames read from a file may start 4 or 8 bytes past a 64-byte boundary, where MKL's products round
    differently: train() computes on an aligned copy, so the run is the one on torch's own tensor."""
    X, lab, val = _problem()
    buf = torch.empty(X.numel() + 16)
    shifted = buf[1:1 + X.numel()].view(X.shape)  # 4 bytes past torch's 64-byte alignment
    shifted.copy_(X)
    assert shifted.data_ptr() % 64 != 0 and X.data_ptr() % 64 == 0
    s = ADMMSettings(iterations=3, warmup=1, seed=2)
    a = train(X, lab, [8], s, val=val, progress=False)
    b = train(shifted, lab, [8], s, val=val, progress=False)
    for wa, wb in zip(a.final_weights, b.final_weights):
        assert torch.equal(wa, wb)
    assert _strip(a.history) == _strip(b.history)


def test_requested_cpu_capability_is_the_one_torch_uses():
    """`make test-determinism` sets ATEN_CPU_CAPABILITY=avx2: its run must really use the AVX2 kernels
    (an unknown or ignored value would silently prove nothing)."""
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if not wanted:
        pytest.skip("ATEN_CPU_CAPABILITY not set (the determinism run under `make test-determinism` sets it)")
    assert torch.backends.cpu.get_cpu_capability().lower() == wanted.lower()
