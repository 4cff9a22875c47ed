"""Bad input never ends in a traceback and never loses data.

Every case below goes through the command line (``admm_snn.cli.main``) and must give exit status 2 and
exactly one line on stderr, ``admm-snn: error: ...``, naming the file/field/value. All cases run
in-process with file-descriptor capture; a representative subset also runs as real
``python -m admm_snn.cli`` subprocesses (two at a time; each costs a Python start-up). The Python API
cases (NaN frames, wrong shapes, invalid settings), a disk that fills during a checkpoint and a
diverging run are tested in-process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import admm_snn.admm.solver as S
import admm_snn.io as io_mod
from admm_snn.admm.settings import ADMMSettings
from admm_snn.cli import main
from admm_snn.errors import AdmmSnnError, CheckpointError, DataError, DivergenceError, SettingsError
from admm_snn.io import save_model
from admm_snn.network import LIFParams, forward, predict
from admm_snn.train import CHECKPOINT, load_checkpoint, train

# ------------------------------------------------------------------------------------------------------
# Scenario files
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def W(nmnist_root, tmp_path_factory):
    """A workspace: a tiny N-MNIST copy (2 real recordings per digit), broken variants of it, models."""
    base = tmp_path_factory.mktemp("bad")
    good = base / "good"
    for d in range(10):
        (good / "Train" / str(d)).mkdir(parents=True)
        for f in sorted((nmnist_root / "Train" / str(d)).glob("*.bin"))[:2]:
            shutil.copyfile(f, good / "Train" / str(d) / f.name)

    def variant(name, change):
        root = base / name
        shutil.copytree(good, root)
        change(root, sorted((root / "Train" / "4").glob("*.bin"))[0])
        return root

    def truncate(root, f):
        f.write_bytes(f.read_bytes()[:-3])

    def outside(root, f):
        b = bytearray(f.read_bytes())
        b[5 * 10] = 40  # x of event 10
        f.write_bytes(bytes(b))

    def backwards(root, f):
        b = bytearray(f.read_bytes())
        i = 5 * 200  # event 200 gets timestamp 0, earlier than event 199
        b[i + 2] &= 0x80
        b[i + 3] = b[i + 4] = 0
        f.write_bytes(bytes(b))

    def empty_file(root, f):
        f.write_bytes(b"")

    def empty_folder(root, f):
        for g in (root / "Train" / "3").iterdir():
            g.unlink()

    roots = {
        "good": good,
        "truncated": variant("truncated", truncate),
        "outside": variant("outside", outside),
        "backwards": variant("backwards", backwards),
        "empty_file": variant("empty_file", empty_file),
        "empty_folder": variant("empty_folder", empty_folder),
    }
    notnm = base / "not_nmnist"
    (notnm / "Train" / "cats").mkdir(parents=True)
    (notnm / "Train" / "cats" / "a.jpg").write_bytes(b"\xff\xd8\xff")
    roots["not_nmnist"] = notnm
    roots["no_train"] = base / "photos"
    (base / "photos").mkdir()
    (base / "photos" / "x.png").write_bytes(b"\x89PNG")

    models = base / "models"
    g = torch.Generator().manual_seed(0)
    digits_w = [torch.randn(8, 64, generator=g), torch.randn(10, 8, generator=g)]
    save_model(models / "digits" / "model.safetensors", digits_w, 0.95, 1.0,
               {"data": {"dataset": "digits", "time_steps": 5}})
    good_bytes = (models / "digits" / "model.safetensors").read_bytes()
    (models / "truncated").mkdir()
    (models / "truncated" / "model.safetensors").write_bytes(good_bytes[: len(good_bytes) // 2])
    (models / "random").mkdir()
    (models / "random" / "model.safetensors").write_bytes(os.urandom(3000))
    (models / "header_only").mkdir()
    (models / "header_only" / "model.safetensors").write_bytes(good_bytes[:8])
    (models / "pickle").mkdir()
    torch.save({"W1": digits_w[0]}, models / "pickle" / "model.safetensors")
    nan_w = [w.clone() for w in digits_w]
    nan_w[1][0, 0] = float("nan")
    save_model(models / "nan" / "model.safetensors", nan_w, 0.95, 1.0, {})
    a_file = base / "a_file"
    a_file.write_text("not a folder")

    # a finished digits run with a checkpoint, to resume with other settings
    run = base / "run"
    assert main(["train", "--dataset", "digits", "--time-steps", "4", "--hidden", "4", "--iterations", "2",
                 "--val-fraction", "0.1", "--test-fraction", "0.8", "--checkpoint-every", "1", "--quiet",
                 "--out", str(run)]) == 0
    return {"base": base, "roots": roots, "models": models, "file": a_file, "run": run}


def _nm(W, root, *extra):
    return ["train", "--dataset", "nmnist", "--data-dir", str(W["roots"][root]), "--cache-dir",
            str(W["base"] / f"cache-{root}"), "--time-steps", "5", "--iterations", "1", "--hidden", "4",
            "--quiet", "--out", str(W["base"] / f"out-{root}"), *extra]


def _digits(W, *extra):
    return ["train", "--dataset", "digits", "--time-steps", "4", "--hidden", "4", "--iterations", "1",
            "--val-fraction", "0.1", "--test-fraction", "0.8", "--quiet", *extra]


# name -> (argv builder, words the error line must contain)
CASES = {
    "truncated event file": (lambda W: _nm(W, "truncated"), ["Train/4/", "not a multiple of 5"]),
    "empty event file": (lambda W: _nm(W, "empty_file"), ["Train/4/", "empty"]),
    "event outside the sensor": (lambda W: _nm(W, "outside"), ["event 10", "x=40", "outside 0..33"]),
    "timestamps going back": (lambda W: _nm(W, "backwards"), ["event 200", "earlier than event 199"]),
    "empty digit folder": (lambda W: _nm(W, "empty_folder"), ["Train/3", "no .bin"]),
    "not an N-MNIST folder": (lambda W: _nm(W, "not_nmnist"), ["digit subfolders"]),
    "folder without Train": (lambda W: _nm(W, "no_train"), ["no N-MNIST Train/"]),
    "delta 0": (lambda W: _digits(W, "--delta", "0", "--out", str(W["base"] / "o")), ["delta=0.0", "(0, 1]"]),
    "delta 1.5": (lambda W: _digits(W, "--delta", "1.5", "--out", str(W["base"] / "o")), ["delta=1.5"]),
    "theta 0": (lambda W: _digits(W, "--theta", "0", "--out", str(W["base"] / "o")), ["theta=0.0", "> 0"]),
    "theta negative": (lambda W: _digits(W, "--theta", "-1", "--out", str(W["base"] / "o")), ["theta=-1.0"]),
    "rho 0": (lambda W: _digits(W, "--rho", "0", "--out", str(W["base"] / "o")), ["rho=0.0"]),
    "rho nan": (lambda W: _digits(W, "--rho", "nan", "--out", str(W["base"] / "o")), ["rho=nan"]),
    "beta negative": (lambda W: _digits(W, "--beta", "-0.5", "--out", str(W["base"] / "o")), ["beta=-0.5"]),
    "zero time steps (digits)": (lambda W: _digits(W, "--time-steps", "0", "--out", str(W["base"] / "o")),
                                 ["time_steps=0"]),
    "zero time steps (nmnist)": (lambda W: _nm(W, "good", "--time-steps", "0"), ["time_steps=0"]),
    "zero hidden units": (lambda W: _digits(W, "--hidden", "0", "--out", str(W["base"] / "o")), ["hidden"]),
    "negative iterations": (lambda W: _digits(W, "--iterations", "-1", "--out", str(W["base"] / "o")),
                            ["iterations=-1"]),
    "out under a regular file": (lambda W: _digits(W, "--out", str(W["file"] / "run")), ["a_file", "--out"]),
    "out is a regular file": (lambda W: _digits(W, "--out", str(W["file"])), ["a_file", "is a file"]),
    "resume with other settings": (lambda W: _digits(W, "--iterations", "3", "--rho", "2", "--resume", "--out",
                                                     str(W["run"])), ["rho=1.0", "rho=2.0", "checkpoint"]),
    "resume with another network": (lambda W: _digits(W, "--iterations", "3", "--hidden", "5", "--resume",
                                                       "--out", str(W["run"])), ["[64, 4, 10]", "[64, 4, 5, 10]"]),
    "resume without checkpoint": (lambda W: _digits(W, "--resume", "--out", str(W["base"] / "fresh")),
                                  ["no checkpoint", "without --resume"]),
    "truncated model": (lambda W: ["eval", "--model", str(W["models"] / "truncated")],
                        ["truncated/model.safetensors", "corrupt"]),
    "random-bytes model": (lambda W: ["eval", "--model", str(W["models"] / "random")],
                           ["random/model.safetensors", "corrupt"]),
    "8-byte model": (lambda W: ["eval", "--model", str(W["models"] / "header_only")], ["corrupt"]),
    "pickle model": (lambda W: ["eval", "--model", str(W["models"] / "pickle")], ["not a safetensors file"]),
    "model with NaN weights": (lambda W: ["eval", "--model", str(W["models"] / "nan")], ["W2", "NaN"]),
    "missing model": (lambda W: ["eval", "--model", str(W["models"] / "nope")], ["does not exist"]),
    "digits model on N-MNIST data": (
        lambda W: ["eval", "--model", str(W["models"] / "digits"), "--dataset", "nmnist", "--data-dir",
                   str(W["roots"]["good"]), "--cache-dir", str(W["base"] / "cache-eval"), "--time-steps", "5",
                   "--split", "train"],
        ["expects 64 inputs", "2312", "another dataset"]),
    "export of a corrupt model": (lambda W: ["export", "--model", str(W["models"] / "random"), "--format", "nir",
                                             str(W["base"] / "x.nir")], ["corrupt"]),
    "export with dt 0": (lambda W: ["export", "--model", str(W["models"] / "digits"), "--dt", "0",
                                    str(W["base"] / "x.nir")], ["dt=0.0"]),
}

SUBPROCESS_CASES = ["truncated event file", "delta 1.5", "random-bytes model"]


def _check_error(name, rc, stderr, words):
    assert rc == 2, f"{name}: exit status {rc}, stderr: {stderr}"
    assert "Traceback" not in stderr, f"{name}: {stderr}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), f"{name}: stderr is not one line: {stderr!r}"
    assert lines[0].startswith("admm-snn: error: "), f"{name}: {lines[0]}"
    for w in words:
        assert w in lines[0], f"{name}: {w!r} not in {lines[0]!r}"


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_error_is_one_line(W, name, capfd):
    argv, words = CASES[name]
    argv = argv(W)
    before = _digest(W["run"])
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    _check_error(name, rc, err, words)
    assert _digest(W["run"]) == before, "a failed command changed the files of an earlier run"


def test_cli_errors_in_real_subprocesses(W):
    def run(name):
        argv = CASES[name][0](W)
        p = subprocess.run([sys.executable, "-m", "admm_snn.cli", *argv], capture_output=True, text=True,
                           timeout=300)
        return name, p.returncode, p.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, SUBPROCESS_CASES))
    for name, rc, err in results:
        _check_error(name, rc, err, CASES[name][1])


# ------------------------------------------------------------------------------------------------------
# Python API
# ------------------------------------------------------------------------------------------------------

def _small(n=30, T=5, n_in=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, n, n_in, generator=g) < 0.3).float(), torch.arange(n) % 3


def _one_line_error(exc_info, cls, *words):
    assert isinstance(exc_info.value, cls)
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_train_refuses_nan_and_inf_frames():
    X, y = _small()
    s = ADMMSettings(iterations=1)
    for value, where in ((float("nan"), "time step 2, sample 7, input 3"), (float("inf"), "inf")):
        Xb = X.clone()
        Xb[2, 7, 3] = value
        with pytest.raises(AdmmSnnError) as e:
            train(Xb, y, [4], s, progress=False)
        _one_line_error(e, DataError, "NaN or infinite", where)
    with pytest.raises(AdmmSnnError) as e:
        train(X, y, [4], s, val=(torch.full((5, 4, 12), float("nan")), torch.zeros(4, dtype=torch.long)),
              progress=False)
    _one_line_error(e, DataError, "validation frames")


@pytest.mark.parametrize("case", [
    "2d frames", "4d frames", "zero time steps", "zero samples", "labels length", "float labels",
    "negative labels", "labels beyond n_classes", "hidden zero", "hidden not ints", "val inputs", "not a tensor",
    "checkpoint_every negative", "settings not a record",
])
def test_train_refuses_wrong_shapes_and_types(case):
    X, y = _small()
    s = ADMMSettings(iterations=1)
    args, kw = [X, y, [4], s], {}
    if case == "2d frames":
        args[0] = X[0]
    elif case == "4d frames":
        args[0] = X[None]
    elif case == "zero time steps":
        args[0] = X[:0]
    elif case == "zero samples":
        args[0], args[1] = X[:, :0], y[:0]
    elif case == "labels length":
        args[1] = y[:-1]
    elif case == "float labels":
        args[1] = y.float()
    elif case == "negative labels":
        args[1] = y - 1
    elif case == "labels beyond n_classes":
        kw["n_classes"] = 2
    elif case == "hidden zero":
        args[2] = [4, 0]
    elif case == "hidden not ints":
        args[2] = [4.5]
    elif case == "val inputs":
        kw["val"] = (torch.zeros(5, 3, 11), torch.zeros(3, dtype=torch.long))
    elif case == "not a tensor":
        args[0] = X.numpy()
    elif case == "checkpoint_every negative":
        kw["checkpoint_every"] = -1
    elif case == "settings not a record":
        args[3] = {"rho": 1.0}
    with pytest.raises(AdmmSnnError) as e:
        train(*args, progress=False, **kw)
    assert str(e.value) and "\n" not in str(e.value)


def test_forward_and_predict_refuse_wrong_shapes():
    X, _ = _small()
    Ws = [torch.zeros(4, 12), torch.zeros(3, 4)]
    p = LIFParams()
    for bad_w, bad_x in (([torch.zeros(4, 11), torch.zeros(3, 4)], X), (Ws, X[0]), (Ws, X[:0]),
                         ([torch.zeros(4, 12), torch.zeros(3, 5)], X)):
        for f in (forward, predict):
            with pytest.raises(SettingsError):
                f(bad_w, bad_x, p)


@pytest.mark.parametrize("field,value", [
    ("delta", 0.0), ("delta", -0.1), ("delta", 1.0001), ("delta", float("nan")), ("theta", 0.0),
    ("theta", -2.0), ("rho", 0.0), ("rho", -1.0), ("rho", float("inf")), ("beta", 0.0), ("beta", -1.0),
    ("beta", float("nan")), ("iterations", -1), ("iterations", 2.5), ("schedule", "random"),
])
def test_invalid_settings(field, value):
    with pytest.raises(SettingsError) as e:
        ADMMSettings(**{field: value})
    assert field in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------------
# A disk that fills up, a run that diverges
# ------------------------------------------------------------------------------------------------------

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["save_file", "os.replace"])
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, where):
    X, y = _small()
    s = ADMMSettings(iterations=5, warmup=1)
    ref = train(X, y, [4], s, out=tmp_path / "ref", checkpoint_every=1, progress=False)
    out = tmp_path / "run"
    real_save, real_replace, calls = io_mod.save_file, os.replace, {"n": 0}

    def full_on_third_checkpoint(fn):
        def wrapped(*args, **kwargs):
            target = str(args[1])
            if "checkpoint" in target:
                calls["n"] += 1
                if calls["n"] == 3:
                    return _enospc()
            return fn(*args, **kwargs)
        return wrapped

    if where == "save_file":
        monkeypatch.setattr(io_mod, "save_file", full_on_third_checkpoint(real_save))
    else:
        monkeypatch.setattr(os, "replace", full_on_third_checkpoint(real_replace))
    with pytest.raises(CheckpointError) as e:
        train(X, y, [4], s, out=out, checkpoint_every=1, progress=False)
    _one_line_error(e, CheckpointError, "checkpoint.safetensors", os.strerror(errno.ENOSPC), "unchanged")
    monkeypatch.undo()
    assert not list(out.glob(".*.tmp")), "the temporary file was left behind"
    r = load_checkpoint(out, s, [12, 4, 3], json.loads("null") or _fp(X, y), "cpu")
    assert r.state.iteration == 2
    # after freeing space: resume and get exactly the uninterrupted result
    res = train(X, y, [4], s, out=out, checkpoint_every=1, resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(res.final_weights, ref.final_weights))


def _fp(X, y):
    from admm_snn.io import fingerprint
    return fingerprint(X, y)


def test_disk_full_while_writing_the_model_keeps_the_checkpoint(tmp_path, monkeypatch):
    X, y = _small()
    s = ADMMSettings(iterations=3, warmup=1)
    out = tmp_path / "run"
    real = io_mod.save_file

    def full_for_model(tensors, path, metadata=None):
        if "model" in str(path):
            _enospc()
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(io_mod, "save_file", full_for_model)
    with pytest.raises(CheckpointError) as e:
        train(X, y, [4], s, out=out, checkpoint_every=1, progress=False)
    _one_line_error(e, CheckpointError, "model.safetensors")
    monkeypatch.undo()
    assert load_checkpoint(out, s, [12, 4, 3], _fp(X, y), "cpu").state.iteration == 3
    train(X, y, [4], s, out=out, checkpoint_every=1, resume=True, progress=False)  # writes the model now
    assert (out / "model.safetensors").is_file()


def test_divergence_names_iteration_and_block_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    X, y = _small()
    s = ADMMSettings(iterations=6, warmup=1)
    out = tmp_path / "run"
    real = S.parallel_output
    k = 4

    def poisoned(state, *args, **kwargs):
        real(state, *args, **kwargs)
        if state.iteration + 1 == k:  # the iteration being computed
            state.weights[-1][0, 0] = float("nan")

    monkeypatch.setattr(S, "parallel_output", poisoned)
    with pytest.raises(DivergenceError) as e:
        train(X, y, [4], s, out=out, checkpoint_every=1, progress=False)
    _one_line_error(e, DivergenceError, f"iteration {k}", "weights of layer 2",
                    f"last checkpoint (iteration {k - 1})", str(out))
    monkeypatch.undo()
    r = load_checkpoint(out, s, [12, 4, 3], _fp(X, y), "cpu")
    assert r.state.iteration == k - 1
    assert all(bool(torch.isfinite(w).all()) for w in r.state.weights)
    assert not (out / "model.safetensors").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == k - 1
