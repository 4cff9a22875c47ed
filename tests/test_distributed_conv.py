"""Data-parallel convolutional ADMM (admm_snn.distributed_conv): 2 Gloo processes give the 1-process
:func:`fit_conv` result (bit for bit with float64 cross products, where the per-sample convolutions and
products are batch-invariant), agree on the budget's stop, and ``admm-snn train --arch --nproc 2`` (and
the torchrun-style ``admm-snn train`` under WORLD_SIZE) writes what the one-process command writes; bad
combinations are one-line errors."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from admm_snn import launch as L
from admm_snn.admm.settings import ADMMSettings
from admm_snn.cli import main
from admm_snn.conv_train import fit_conv
from admm_snn.data.augment import ShiftResampler
from admm_snn.distributed_conv import train_distributed_conv
from admm_snn.errors import SettingsError
from admm_snn.io import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH, SHAPE = "3c3-p2-4c2-12", (2, 8, 8)
"""A conv layer that feeds a convolution (its spike block by CG or by the direct solve), pooling, a dense
layer, the output."""


def _env(**kw):
    import os
    from admm_snn.distributed import FAULT_ENV
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(FAULT_ENV, None)
    env.update(kw)
    return env


def problem_data(n: int = 300, T: int = 5):
    """n samples of 4 classes (each a random pixel-rate pattern) on 2x8x8 frames, uint8; more than
    conv_solver.CALIBRATION_SAMPLES (256), so the rate calibration runs on the evenly spaced subsample."""
    g = torch.Generator().manual_seed(0)
    proto = torch.rand(4, 2 * 8 * 8, generator=g)
    labels = torch.arange(n) % 4
    frames = (torch.rand(T, n, 2 * 8 * 8, generator=g) < 0.15 + 0.5 * proto[labels]).to(torch.uint8)
    return frames, labels


def conv_rows_batch_invariant() -> bool:
    """Whether this machine gives a sample the same bits whatever the other samples of its batch, for the
    per-sample operations of the conv solver at this test's shapes: conv2d, its transpose (the spike
    block's CG) and float32 matrix products (the dense layers' spike blocks). Where they are, a data-parallel
    run differs from one process only by the order of its reduced sums."""
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(1500, 2, 8, 8, generator=g) < 0.3).float()
    W = torch.randn(3, 2, 3, 3, generator=g)
    u = F.conv2d(a, W)
    v = F.conv_transpose2d(u, W)
    M = torch.randn(12, 36, generator=g)
    rows = u.reshape(1500, -1)[:, :36]
    S = torch.randn(48, 48, generator=g, dtype=torch.float64)
    factor = torch.linalg.cholesky(S @ S.T + torch.eye(48, dtype=torch.float64))
    b = v.reshape(1500, -1)[:, :48].to(torch.float64).T  # the direct spike solve's columns
    return (torch.equal(u[:700], F.conv2d(a[:700], W)) and torch.equal(v[700:], F.conv_transpose2d(u[700:], W))
            and torch.equal((rows @ M.T)[700:], rows[700:] @ M.T)
            and torch.equal(torch.cholesky_solve(b, factor)[:, 700:], torch.cholesky_solve(b[:, 700:], factor)))


WORKER = textwrap.dedent('''
    """One rank: the full run, then a budget run on the same process group; rank-tagged results saved."""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from test_distributed_conv import ARCH, SHAPE, problem_data
    method = {method!r}
    from admm_snn.admm.settings import ADMMSettings
    from admm_snn.data.augment import ShiftResampler
    from admm_snn.distributed import connect
    from admm_snn.distributed_conv import train_distributed_conv
    frames, labels = problem_data()
    settings = ADMMSettings(iterations=4, cross_dtype="float64")
    comm = connect(timeout_s=60)
    keep = lambda r: dict(weights=r.weights, best=r.best_weights, history=r.history, best_iteration=r.best_iteration,
                          iterations=r.iterations, status=r.status, compute_s=r.compute_s,
                          sizes=[a.shape[1] for a in r.state.spikes[:1]])
    full = train_distributed_conv(frames, labels, ARCH, SHAPE, settings, val=(frames[:, :90], labels[:90]),
                                  comm=comm, resample=ShiftResampler(frames, SHAPE, 1, 3, groups=4),
                                  spike_solve=method)
    budget = full.history[2]["wall_s"]  # about two iterations' compute: where it stops depends on the timing
    cut = train_distributed_conv(frames, labels, ARCH, SHAPE, settings.replace(iterations=50), comm=comm,
                                 budget_s=budget, spike_solve=method)
    torch.save(dict(full=keep(full), cut=keep(cut), budget=budget), os.path.join({out!r}, f"rank{{comm.rank}}.pt"))
    comm.close()
''')


@pytest.mark.determinism
@pytest.mark.parametrize("method", ["cg", "direct"])
def test_two_processes_equal_one_process_and_agree_on_the_budget(tmp_path, method):
    """float32 states with float64 cross products (--cross-dtype float64), shift augmentation, CG spike
    blocks (or the direct solve: no reduction, each row's own solve), the calibration on a subsample, validation: the 2-process weights, best weights and history
    are fit_conv's on all the data, bit for bit where the per-sample operations are batch-invariant
    (:func:`conv_rows_batch_invariant`; else, as with float32 cross sums, rounding differences that threshold
    flips amplify: the hidden layers within 10%, the readout within 35%. Measured with torch's and MKL's
    AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, where conv2d is not
    batch-invariant): final weights 1.1% / 0.2% / 0.1% apart and the readout 23.5%, the best weights
    equal. The readout is small (norm 0.15) and refitted exactly to the spikes at every iteration, so a
    flipped spike moves it most, as in tests/test_distributed.py). Every rank returns the same result, and
    a budget run stops every rank after the same iteration (the slowest process's seconds count)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(__import__("pathlib").Path(__file__).parent), out=str(tmp_path),
                                    method=method))
    assert L.launch_local(2, [], env=_env(), program=[sys.executable, str(script)]) == 0
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    frames, labels = problem_data()
    settings = ADMMSettings(iterations=4, cross_dtype="float64")
    ref = fit_conv(frames, labels, ARCH, SHAPE, settings, val=(frames[:, :90], labels[:90]),
                   resample=ShiftResampler(frames, SHAPE, 1, 3, groups=4), spike_solve=method)
    full = ranks[0]["full"]
    assert ranks[0]["full"]["sizes"] == ranks[1]["full"]["sizes"] == [150]  # each rank held half the states
    exact = conv_rows_batch_invariant()
    for ours, theirs in ((full["weights"], ref.weights), (full["best"], ref.best_weights)):
        for a, b in zip(ours, theirs):
            if exact:
                assert torch.equal(a, b)
            else:
                bound = 0.35 if a is ours[-1] else 0.1
                assert float((a - b).norm() / b.norm()) < bound
    assert full["best_iteration"] == ref.best_iteration and full["iterations"] == 4 and full["status"] == "finished"
    assert [m["iteration"] for m in full["history"]] == [0, 1, 2, 3, 4]
    for m, r in zip(full["history"], ref.history):
        assert set(r) <= set(m) and m["world_size"] == 2
        if exact:
            assert m["train_accuracy"] == r["train_accuracy"] and m["val_accuracy"] == r["val_accuracy"]
            # counts summed in float64, against one process's float32 mean of the same spikes
            assert m["firing_rate"] == pytest.approx(r["firing_rate"], rel=1e-6)
            steps = [{l: [c[0] for c in v] for l, v in h["cg"].items()} for h in (m, r)]
            assert steps[0] == steps[1]  # the same CG iterations (every process ran the slowest row's)
    assert bool(full["history"][1]["cg"]) == (method == "cg") and full["history"][1]["allreduce_bytes"] > 0
    # every rank: the same result, the same seconds (the slowest process's), the same stop
    for key in ("full", "cut"):
        a, b = ranks[0][key], ranks[1][key]
        assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))
        assert a["history"] == b["history"] and a["compute_s"] == b["compute_s"]
        assert (a["iterations"], a["status"]) == (b["iterations"], b["status"])
    cut = ranks[0]["cut"]
    assert cut["status"] == "budget" and cut["iterations"] < 50 and cut["compute_s"] >= ranks[0]["budget"]
    if len(cut["history"]) > 1:  # it stopped after the iteration that reached it
        assert cut["history"][-2]["wall_s"] < ranks[0]["budget"]


def test_one_process_api_equals_fit_conv():
    """Without a process group (world size 1) train_distributed_conv is fit_conv, bit for bit: the
    default settings, and the uniform start (drawn in the one-process order)."""
    frames, labels = problem_data(60, 4)
    for settings in (ADMMSettings(iterations=2), ADMMSettings(iterations=2, init="uniform", init_rate=None)):
        ref = fit_conv(frames, labels, ARCH, SHAPE, settings, val=(frames[:, :20], labels[:20]))
        res = train_distributed_conv(frames, labels, ARCH, SHAPE, settings, val=(frames[:, :20], labels[:20]))
        assert all(torch.equal(a, b) for a, b in zip(res.weights, ref.weights))
        assert all(torch.equal(a, b) for a, b in zip(res.best_weights, ref.best_weights))
        assert [m["train_accuracy"] for m in res.history] == [m["train_accuracy"] for m in ref.history]
        assert res.best_iteration == ref.best_iteration and res.status == ref.status == "finished"


def test_cg_with_reduce_runs_every_process_to_the_slowest_row():
    """conv.solve_spikes_cg with ``reduce``: two 'processes' (threads exchanging their counts of rows
    above the tolerance) each solve their rows; the first half's systems converge in 2 steps, the second's
    need more. With the summed count both run the whole batch's iterations and give its rows bit for bit;
    alone, the first half stops early at another (also converged) point."""
    import threading
    from admm_snn.admm.conv import solve_spikes_cg
    g = torch.Generator().manual_seed(0)
    B, n = 8, 12
    D = torch.rand(B, n, generator=g, dtype=torch.float64) * 4
    D[:B // 2] = torch.where(torch.arange(n) % 2 == 0, 1.0, 3.0).to(torch.float64)  # two eigenvalues: 2 steps
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    whole = solve_spikes_cg(b, lambda v, d=D: d * v, 0.1, tol=1e-10, max_iterations=50)
    barrier, box, results = threading.Barrier(2), [None, None], [None, None]

    def worker(r, rows):
        def reduce(t):
            box[r] = t.clone()
            barrier.wait()
            total = box[0] + box[1]
            barrier.wait()
            return total
        results[r] = solve_spikes_cg(b[rows], lambda v, d=D[rows]: d * v, 0.1, tol=1e-10, max_iterations=50,
                                     reduce=reduce)
    threads = [threading.Thread(target=worker, args=(r, slice(r * B // 2, (r + 1) * B // 2))) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0].iterations == results[1].iterations == whole.iterations > 2
    assert torch.equal(torch.cat([results[0].x, results[1].x]), whole.x)
    alone = solve_spikes_cg(b[:B // 2], lambda v, d=D[:B // 2]: d * v, 0.1, tol=1e-10, max_iterations=50)
    assert alone.iterations <= 2 and not torch.equal(alone.x, whole.x[:B // 2])


@pytest.mark.parametrize("kwargs,needle", [
    (dict(sharded=True, resample=True), "sharded=False"),
    (dict(settings=ADMMSettings(schedule="sequential")), "schedule"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), "labels have shape"),
    (dict(budget_s=0), "budget_s"),
    (dict(n_classes=2), "outside"),
])
def test_bad_api_arguments_are_one_line_errors(kwargs, needle):
    frames, labels = problem_data(20, 3)
    if kwargs.pop("resample", None):
        kwargs["resample"] = ShiftResampler(frames, SHAPE, 1, 0)
    args = dict(labels=labels, settings=ADMMSettings(iterations=1))
    args.update(kwargs)
    with pytest.raises(SettingsError) as e:
        train_distributed_conv(frames, args.pop("labels"), ARCH, SHAPE, args.pop("settings"), **args)
    assert needle in str(e.value) and "\n" not in str(e.value)


def _summary_line(out: str) -> dict:
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


DIGITS = ["--dataset", "digits", "--time-steps", "5", "--limit", "600", "--arch", "3c3-12", "--iterations", "3",
          "--cross-dtype", "float64", "--quiet", "--timeout", "60"]


@pytest.mark.determinism
def test_cli_data_parallel_conv_run_writes_what_one_process_writes(tmp_path, capfd, monkeypatch):
    """admm-snn train --arch --nproc 2 (local processes of admm_snn.launch) and the torchrun-style
    `admm-snn train` in every rank of WORLD_SIZE = 2: the one-process run's model (bit for bit where the
    per-sample operations are batch-invariant), metrics lines, summary and printed summary line, with a
    `distributed` record added and no checkpoint (data-parallel runs do not checkpoint)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, two, ranks = tmp_path / "one", tmp_path / "two", tmp_path / "ranks"
    exact = conv_rows_batch_invariant()
    assert main(["train", *DIGITS, "--out", str(one)]) == 0
    line_one = _summary_line(capfd.readouterr().out)
    assert main(["train", *DIGITS, "--nproc", "2", "--out", str(two)]) == 0
    printed = capfd.readouterr().out
    line_two = _summary_line(printed)
    assert "2 processes" in printed and set(line_two) == set(line_one)
    if exact:
        line_two.pop("wall_s"), line_one.pop("wall_s")
        assert line_two == line_one
    program = [sys.executable, "-m", "admm_snn.cli", "train"]  # what torchrun ... admm-snn train runs in each rank
    assert L.launch_local(2, [*DIGITS, "--out", str(ranks)], env=_env(), program=program) == 0
    capfd.readouterr()
    assert {p.name for p in one.iterdir()} == {p.name for p in two.iterdir()} | {"checkpoint.safetensors"}
    m1 = load_model(one)
    for run in (two, ranks):
        assert {p.name for p in run.iterdir()} == {p.name for p in two.iterdir()}
        m2 = load_model(run)
        assert (m2["arch"], m2["input_shape"]) == (m1["arch"], m1["input_shape"]) == ("3c3-12", (1, 8, 8))
        assert m2["extra"]["distributed"]["world_size"] == 2 and m2["extra"]["distributed"]["shard_sizes"] == [180, 180]
        h1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
        h2 = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["iteration"] for m in h2] == [m["iteration"] for m in h1] == [0, 1, 2, 3]
        assert all(set(a) <= set(b) for a, b in zip(h1, h2))
        s1, s2 = (json.loads((r / "summary.json").read_text()) for r in (one, run))
        assert set(s1) <= set(s2) and s2["distributed"]["mode"] == "data-parallel"
        if exact:
            assert all(torch.equal(a, b) for a, b in zip(m1["weights"], m2["weights"]))
            assert [m["train_accuracy"] for m in h2] == [m["train_accuracy"] for m in h1]
            assert [m["val_accuracy"] for m in h2] == [m["val_accuracy"] for m in h1]
            assert s2["test_accuracy"] == s1["test_accuracy"] and s2["best_iteration"] == s1["best_iteration"]


@pytest.mark.parametrize("extra,words", [
    (["--nproc", "2", "--federated"], ["--federated", "dense networks"]),
    (["--federated"], ["--federated"]),
    (["--nproc", "2", "--resume"], ["--resume", "--nproc", "checkpoint"]),
    (["--nproc", "2", "--checkpoint-every", "1"], ["--checkpoint-every", "--nproc"]),
    (["--nproc", "2", "--report-samples", "10"], ["--report-samples"]),
    (["--nproc", "2", "--hidden", "8"], ["--hidden"]),
    (["--nproc", "2", "--budget-s", "0"], ["--budget-s"]),
    (["--nproc", "2", "--arch", "3x3"], ["3x3"]),
])
def test_bad_data_parallel_conv_runs_are_one_line_errors(tmp_path, capfd, extra, words):
    """Checked before any process starts: one line, exit status 2, nothing written."""
    argv = ["train", "--dataset", "digits", "--arch", "3c3-12", "--quiet", "--out", str(tmp_path / "o"), *extra]
    capfd.readouterr()
    assert main(argv) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("admm-snn: error: "), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "o").exists()


def test_torchrun_rank_refuses_resume_with_one_line(tmp_path, capfd, monkeypatch):
    """Under torchrun (WORLD_SIZE > 1) each rank refuses --resume before it joins the group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--dataset", "digits", "--arch", "3c3-12", "--resume", "--out", str(tmp_path / "o")]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--resume with --nproc or torchrun" in lines[0]
