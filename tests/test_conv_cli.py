"""Convolutional networks from the command line: ``admm-snn train --arch``, then ``eval`` and ``export``
on what it wrote; conv model files (io.save_model / load_model with ``arch`` and ``input_shape``); and
the one-line errors of bad ``--arch`` runs and damaged conv model files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from admm_snn.cli import main
from admm_snn.conv_network import init_weights, predict
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.errors import CheckpointError, SettingsError
from admm_snn.io import load_model, save_model
from admm_snn.network import LIFParams

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = ["--dataset", "digits", "--time-steps", "5", "--limit", "200", "--quiet"]


def _summary_line(out: str) -> dict:
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def _accuracy(model, ds) -> float:
    pred = predict(model["arch"], model["input_shape"], model["weights"], ds.time_major(),
                   LIFParams(model["delta"], model["theta"]))
    return float((pred == ds.labels).to(torch.float64).mean())


def test_train_eval_export_a_conv_network_on_nmnist(nmnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    data = ["--dataset", "nmnist", "--data-dir", str(nmnist_root), "--limit", "60", "--time-steps", "5",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", *data, "--iterations", "1", "--arch", "4c5-p4-16", "--out", str(out), "--quiet"]) == 0
    summary = _summary_line(capsys.readouterr().out)
    assert {"best_iteration", "iterations", "status", "wall_s", "train_accuracy", "val_accuracy",
            "test_accuracy", "test_firing_rate"} <= set(summary)
    assert summary["iterations"] == 1 and summary["status"] == "finished" and len(summary["test_firing_rate"]) == 2

    model = load_model(out)
    assert model["arch"] == "4c5-p4-16" and model["input_shape"] == (2, 34, 34)
    assert [tuple(w.shape) for w in model["weights"]] == [(4, 2, 5, 5), (16, 4 * 7 * 7), (10, 16)]
    assert model["sizes"] == [2 * 34 * 34, 4 * 30 * 30, 16, 10]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1]
    full = json.loads((out / "summary.json").read_text())
    assert full["arch"] == "4c5-p4-16" and full["input_shape"] == [2, 34, 34]
    assert full["test_accuracy"] == summary["test_accuracy"] and full["best_iteration"] == summary["best_iteration"]

    # the saved weights are the best validation iterate, and the test accuracy is theirs
    splits = load_splits(DataOptions(dataset="nmnist", data_dir=str(nmnist_root), limit=60, time_steps=5,
                                     cache_dir=str(tmp_path / "cache")))
    assert _accuracy(model, splits.val) == pytest.approx(summary["val_accuracy"])
    assert summary["val_accuracy"] == max(m["val_accuracy"] for m in lines)
    assert _accuracy(model, splits.test) == pytest.approx(summary["test_accuracy"])

    assert main(["eval", "--model", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"]) and report["n_samples"] == len(splits.test)
    assert report["arch"] == "4c5-p4-16" and report["firing_rate_per_layer"] == pytest.approx(summary["test_firing_rate"])

    nir = pytest.importorskip("nir")
    pytest.importorskip("snntorch")
    from admm_snn.export import import_snntorch, simulate_snntorch
    assert main(["export", "--model", str(out), str(tmp_path / "conv.nir")]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["arch"] == "4c5-p4-16" and exported["dt"] == pytest.approx(0.01)
    graph = nir.read(str(tmp_path / "conv.nir"))
    assert graph.nodes["conv1"].weight.shape == (4, 2, 5, 5) and "pool2" in graph.nodes
    frames = splits.test.time_major()
    potentials, _ = simulate_snntorch(import_snntorch(graph), frames, graph)
    ours = predict(model["arch"], model["input_shape"], model["weights"], frames, LIFParams(model["delta"], model["theta"]))
    assert torch.equal(potentials[-1].argmax(dim=1), ours)


def test_train_arch_on_the_bundled_digits_and_the_budget(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["train", *DIGITS, "--iterations", "2", "--arch", "3c3-12", "--out", str(out)]) == 0
    summary = _summary_line(capsys.readouterr().out)
    model = load_model(out)
    assert model["input_shape"] == (1, 8, 8) and summary["iterations"] == 2
    assert main(["eval", "--model", str(out), "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(summary["val_accuracy"])

    # --budget-s: stops after the iteration that reaches it (here the start alone already does)
    budget = tmp_path / "budget"
    assert main(["train", *DIGITS, "--iterations", "50", "--arch", "3c3-12", "--budget-s", "1e-6",
                 "--out", str(budget)]) == 0
    summary = _summary_line(capsys.readouterr().out)
    assert summary["status"] == "budget" and summary["iterations"] < 50
    assert len((budget / "metrics.jsonl").read_text().splitlines()) == summary["iterations"] + 1


def test_conv_spike_solve_option(tmp_path, capsys):
    """--conv-spike-solve direct|cg|auto: two conv layers (the spikes of 3c3 feed 4c3); CG logs its
    iterations in metrics.jsonl, the direct solve logs none, and both train to a model; auto picks the
    direct solve for this small layer (the same weights as direct)."""
    weights = {}
    for method in ("direct", "cg", "auto"):
        out = tmp_path / method
        assert main(["train", *DIGITS, "--iterations", "2", "--arch", "3c3-4c3-12", "--conv-spike-solve", method,
                     "--out", str(out)]) == 0
        summary = _summary_line(capsys.readouterr().out)
        assert summary["iterations"] == 2
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert bool(last["cg"]) == (method == "cg")
        weights[method] = load_model(out / "model.safetensors")["weights"]
    assert all(torch.equal(x, y) for x, y in zip(weights["auto"], weights["direct"]))


def test_conv_run_resumes_from_its_checkpoint(tmp_path, capsys):
    """admm-snn train --arch writes a checkpoint (at the end, and every --checkpoint-every iterations) and
    --resume trains on to more --iterations: the same weights as the uninterrupted run, one metrics line
    per iteration, and the memory estimate printed before the start."""
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["train", *[x for x in DIGITS if x != "--quiet"], "--arch", "3c3-12"]
    assert main([*argv, "--iterations", "3", "--out", str(a)]) == 0
    assert "memory estimate:" in capsys.readouterr().out
    assert main([*argv, "--iterations", "2", "--checkpoint-every", "1", "--out", str(b)]) == 0
    assert (b / "checkpoint.safetensors").is_file()
    assert main([*argv, "--iterations", "3", "--out", str(b), "--resume"]) == 0
    wa, wb = load_model(a / "model.safetensors")["weights"], load_model(b / "model.safetensors")["weights"]
    assert all(torch.equal(x, y) for x, y in zip(wa, wb))
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 4


def test_conv_model_file_round_trip_and_shape_checks(tmp_path):
    arch, shape = "4c3-p2-6c2-8", (2, 9, 9)
    W = init_weights(arch, shape, 10, 3.0, torch.Generator().manual_seed(0))
    path = tmp_path / "m" / "model.safetensors"
    save_model(path, W, 0.9, 1.0, {"note": 1}, arch=arch, input_shape=shape)
    m = load_model(path.parent)
    assert m["arch"] == arch and m["input_shape"] == shape and m["extra"] == {"note": 1}
    assert all(torch.equal(a, b) for a, b in zip(W, m["weights"]))
    X = (torch.rand(6, 20, *shape, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    params = LIFParams(0.9, 1.0)
    assert torch.equal(predict(arch, shape, m["weights"], X, params), predict(arch, shape, W, X, params))

    # weights of another network are refused before anything is written
    with pytest.raises(SettingsError, match="layer 1"):
        save_model(tmp_path / "x.safetensors", W, 0.9, 1.0, arch="5c3-p2-6c2-8", input_shape=shape)
    with pytest.raises(SettingsError, match="input_shape"):
        save_model(tmp_path / "x.safetensors", W, 0.9, 1.0, arch=arch)
    assert not (tmp_path / "x.safetensors").exists()

    # dense files are as before: no arch, and they still load
    dense = [torch.randn(5, 12), torch.randn(3, 5)]
    save_model(tmp_path / "d.safetensors", dense, 0.9, 1.0)
    d = load_model(tmp_path / "d.safetensors")
    assert d["arch"] is None and d["input_shape"] is None and d["sizes"] == [12, 5, 3]


def _rewrite(path, dest, **changes):
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        elif k.startswith("W"):
            tensors[k] = v
        else:
            meta[k] = v
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata=meta)
    return dest


@pytest.mark.parametrize("change,words", [
    ({"arch": "5c3-p2-6c2-8"}, ["sizes"]),  # another channel count: the header's sizes do not fit
    ({"arch": "4c3-p2-6c2-9"}, ["sizes"]),
    ({"arch": "12x5"}, ["damaged header", "12x5"]),
    ({"input_shape": "[2, 9]"}, ["damaged header", "input_shape"]),
    ({"input_shape": None}, ["damaged header", "input_shape"]),
    ({"W2": torch.zeros(6, 4, 3, 3)}, ["W2", "(6, 4, 2, 2)"]),  # a kernel of the wrong size
    ({"W1": torch.zeros(4, 2, 3)}, ["W1", "(4, 2, 3, 3)"]),
])
def test_damaged_conv_model_files_are_one_line_errors(tmp_path, change, words):
    arch, shape = "4c3-p2-6c2-8", (2, 9, 9)
    W = init_weights(arch, shape, 10, 3.0, torch.Generator().manual_seed(0))
    good = tmp_path / "good.safetensors"
    save_model(good, W, 0.9, 1.0, arch=arch, input_shape=shape)
    bad = _rewrite(good, tmp_path / "bad" / "model.safetensors", **change)
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


@pytest.fixture(scope="module")
def digits_conv_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "run"
    assert main(["train", *DIGITS, "--iterations", "1", "--arch", "3c3-12", "--out", str(out)]) == 0
    return out


def _bad_cases(model, tmp):
    DIGITS = ["--dataset", "digits", "--time-steps", "5", "--limit", "200", "--quiet", "--out", str(tmp / "o")]
    damaged = lambda: _rewrite(model / "model.safetensors", tmp / "damaged" / "model.safetensors",  # noqa: E731
                               arch="3c5-12").parent
    other = tmp / "other" / "model.safetensors"

    def other_shape():  # a conv model on 1x9x9 inputs, evaluated on the 8x8 digits
        W = init_weights("3c3-12", (1, 9, 9), 10, 3.0, torch.Generator().manual_seed(0))
        save_model(other, W, 0.95, 1.0, {"data": {"dataset": "digits", "time_steps": 5, "limit": 200}},
                   arch="3c3-12", input_shape=(1, 9, 9))
        return other.parent
    return {
        "unreadable arch": (lambda: ["train", *DIGITS, "--arch", "12x5"], ["12x5"]),
        "arch after dense": (lambda: ["train", *DIGITS, "--arch", "16-4c3"], ["4c3"]),
        "kernel too large": (lambda: ["train", *DIGITS, "--arch", "4c9"], ["4c9", "8x8"]),
        "hidden and arch": (lambda: ["train", *DIGITS, "--hidden", "6", "--arch", "3c3-12"], ["--hidden", "--arch"]),
        "nproc resume": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--nproc", "2", "--resume"],
                         ["--resume", "--nproc"]),
        "federated": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--federated"], ["--federated"]),
        "resume": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--resume", "--out", str(tmp / "r")], ["--resume"]),
        "augment shift": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--augment-shift", "-1"], ["--augment-shift"]),
        "augment too far": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--augment-shift", "4"], ["shift 4", "8x8"]),
        "augment groups": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--augment-shift", "1", "--augment-groups",
                                    "-2"], ["--augment-groups"]),
        "report samples": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--report-samples", "10"], ["--report-samples"]),
        "paper preset": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--preset", "paper"], ["schedule", "convolutional"]),
        "l1": (lambda: ["train", *DIGITS, "--arch", "3c3-12", "--l1", "0.1"], ["l1", "convolutional"]),
        "conv spike solve without arch": (lambda: ["train", *DIGITS, "--conv-spike-solve", "cg"],
                                          ["--conv-spike-solve", "--arch"]),
        "eval damaged header": (lambda: ["eval", "--model", str(damaged())], ["model.safetensors", "sizes"]),
        "export damaged header": (lambda: ["export", "--model", str(damaged()), str(tmp / "x.nir")],
                                  ["model.safetensors", "sizes"]),
        "eval other input shape": (lambda: ["eval", "--model", str(other_shape())], ["1x9x9", "1x8x8"]),
    }


CASE_NAMES = ["unreadable arch", "arch after dense", "kernel too large", "hidden and arch", "nproc resume", "federated",
              "resume", "augment shift", "augment too far", "augment groups", "report samples", "paper preset", "l1",
              "conv spike solve without arch",
              "eval damaged header", "export damaged header", "eval other input shape"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_conv_runs_are_one_line_errors(digits_conv_model, tmp_path, name, capfd):
    argv, words = _bad_cases(digits_conv_model, tmp_path)[name]
    argv = argv()
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, f"{name}: exit status {rc}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("admm-snn: error: "), f"{name}: {err!r}"
    for w in words:
        assert w in lines[0], f"{name}: {w!r} not in {lines[0]!r}"
    assert not (tmp_path / "x.nir").exists() and not (tmp_path / "o").exists()


def test_interrupt_message_points_at_the_checkpoint(monkeypatch, capsys):
    """Ctrl-C: a dense run and a conv run point at their last checkpoint."""
    from admm_snn import cli

    def interrupt(args):
        raise KeyboardInterrupt

    build = cli.build_parser

    def parser_that_interrupts():
        parser = build()
        parser._subparsers._group_actions[0].choices["train"].set_defaults(func=interrupt)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_that_interrupts)
    for argv, expected in ((["train", "--arch", "3c3-12"], "last checkpoint in the output folder is intact"),
                           (["train"], "last checkpoint in the output folder is intact")):
        assert cli.main(argv) == 130
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
