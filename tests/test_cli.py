"""The command line around checkpoints and export: train / --resume / eval / export, in-process."""

from __future__ import annotations

import json

import pytest
import torch

from admm_snn.cli import build_parser, main
from admm_snn.io import load_model
from admm_snn.train import CHECKPOINT

SMALL = ["--dataset", "digits", "--time-steps", "5", "--hidden", "6", "--val-fraction", "0.15",
         "--test-fraction", "0.7", "--quiet"]


def _train(out, *extra):
    return main(["train", *SMALL, "--out", str(out), *extra])


def test_export_is_a_command(capsys):
    parser = build_parser()
    assert "export" in parser.format_help()
    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0
    assert "--format" in capsys.readouterr().out


@pytest.mark.determinism
def test_train_resume_eval_export(tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(straight, "--iterations", "4", "--checkpoint-every", "2") == 0
    assert _train(split, "--iterations", "2", "--checkpoint-every", "1") == 0
    assert _train(split, "--iterations", "4", "--checkpoint-every", "1", "--resume") == 0
    a, b = load_model(straight), load_model(split)
    assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))
    assert a["extra"]["best_iteration"] == b["extra"]["best_iteration"]
    lines = (split / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4]
    summary = json.loads((split / "summary.json").read_text())
    assert summary["iterations"] == 4 and "test_accuracy" in summary

    # resuming a finished run changes nothing (safetensors orders header keys arbitrarily: compare content)
    assert _train(split, "--iterations", "4", "--checkpoint-every", "1", "--resume") == 0
    c = load_model(split)
    assert all(torch.equal(x, y) for x, y in zip(b["weights"], c["weights"]))
    assert {k: v for k, v in c.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
    assert len((split / "metrics.jsonl").read_text().splitlines()) == 4

    capsys.readouterr()
    assert main(["eval", "--model", str(split), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sizes"] == [64, 6, 10] and 0.0 <= report["accuracy"] <= 1.0

    nir = pytest.importorskip("nir")
    assert main(["export", "--model", str(split), "--format", "nir", str(tmp_path / "net.nir")]) == 0
    graph = nir.read(str(tmp_path / "net.nir"))
    assert graph.nodes["fc1"].weight.shape == (6, 64) and graph.nodes["fc2"].weight.shape == (10, 6)
    assert (split / CHECKPOINT).is_file() and not list(split.glob(".*.tmp"))
