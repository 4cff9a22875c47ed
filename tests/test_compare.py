"""End-to-end tests of ``admm-snn compare`` and ``admm-snn sweep`` on tiny problems, and of their helpers."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("snntorch")
pytest.importorskip("matplotlib")

from admm_snn.cli import main  # noqa: E402
from admm_snn.experiments.common import PeakMemory, mean_std as _mean_std, time_to_fraction  # noqa: E402
from admm_snn.experiments.compare import PAPER_NMNIST  # noqa: E402
from admm_snn.experiments.sweep import coerce_setting  # noqa: E402
from admm_snn.errors import SettingsError  # noqa: E402

TINY = ["--hidden-width", "16", "--iterations", "2", "--bptt-epochs", "2", "--time-steps", "10"]
PLOTS = ["accuracy_vs_depth.png", "accuracy_vs_time.png", "admm_convergence.png", "sample_activity.png"]


def _in_unit(x) -> bool:
    return isinstance(x, (int, float)) and 0.0 <= x <= 1.0


def _check_results(out, depths, seeds):
    for name in ["results.md", "results.json", "best_admm.safetensors", *PLOTS]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    assert res["config"]["depths"] == depths and res["config"]["seeds"] == seeds
    runs = res["runs"]
    assert len(runs) == len(depths) * seeds * 3
    assert {r["method"] for r in runs} == {"admm", "bptt", "floor"}
    for r in runs:
        for k in ("test_accuracy", "val_accuracy"):
            assert _in_unit(r[k]), (r["method"], k, r[k])
        assert len(r["firing_rate"]) == r["depth"]
        assert all(_in_unit(x) for x in r["firing_rate"])
        for k in ("train_s", "wall_s", "time_to_90", "time_to_95", "peak_memory_mib", "synaptic_ops"):
            assert isinstance(r[k], (int, float)) and r[k] >= 0 and math.isfinite(r[k]), (r["method"], k, r[k])
        assert r["time_to_90"] <= r["time_to_95"] <= r["train_s"] + 1e-9
        assert all(_in_unit(acc) and t >= 0 for t, acc in r["curve"])
    admm = [r for r in runs if r["method"] == "admm"]
    assert all(len(r["history"]) == 2 and "residual_output" in r["history"][0] for r in admm)
    summary = res["summary"]
    assert len(summary) == len(depths) * 3
    for row in summary:
        assert _in_unit(row["test_accuracy"]["mean"]) and _in_unit(row["test_accuracy"]["std"])
        assert row["test_accuracy"]["n"] == seeds
        assert len(row["firing_rate"]) == row["depth"]
    md = (out / "results.md").read_text()
    assert "| Hidden layers |" in md and "Accuracy against training time" in md
    if res["config"]["data"]["dataset"] == "nmnist":  # the paper's N-MNIST figures, on N-MNIST only
        for d in depths:
            assert f"{100 * PAPER_NMNIST[d]:.1f}" in md
        assert "Differences from the paper" in md
    else:
        assert "Paper ADMM" not in md and res["paper"] == {}
    return res


def test_compare_nmnist_tiny(nmnist_root, tmp_path):
    out = tmp_path / "cmp"
    rc = main(["compare", "--data-dir", str(nmnist_root), "--limit", "60", "--depths", "1", "2", "--seeds", "1",
               *TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    res = _check_results(out, [1, 2], 1)
    assert res["config"]["data"]["dataset"] == "nmnist"
    assert res["split"]["n_train"] + res["split"]["n_val"] + res["split"]["n_test"] == 60
    # The floor is ADMM's starting point: same seed, same settings -> the first point of ADMM's curve.
    admm = next(r for r in res["runs"] if r["method"] == "admm" and r["depth"] == 1)
    floor = next(r for r in res["runs"] if r["method"] == "floor" and r["depth"] == 1)
    if res["admm_starts_at_floor"]:
        assert admm["curve"][0][1] == floor["val_accuracy"]
    # the sample plot alone, from the saved best model
    rc = main(["compare", "--data-dir", str(nmnist_root), "--limit", "60", "--time-steps", "10",
               "--cache-dir", str(tmp_path / "cache"), "--plot-model", str(out / "best_admm.safetensors"),
               "--plot-sample", "3", "--out", str(tmp_path / "plot")])
    assert rc == 0 and (tmp_path / "plot" / "sample_activity.png").stat().st_size > 0


def test_compare_digits_two_seeds(tmp_path):
    """No external data: the bundled digits, two seeds (so a real standard deviation)."""
    out = tmp_path / "cmp"
    assert main(["compare", "--depths", "1", "--seeds", "2", *TINY, "--time-steps", "5", "--hidden-width", "8",
                 "--val-fraction", "0.4", "--test-fraction", "0.4", "--bptt-batch-size", "128", "--out", str(out)]) == 0
    res = _check_results(out, [1], 2)
    assert res["config"]["data"]["dataset"] == "digits"
    assert sorted(r["seed"] for r in res["runs"] if r["method"] == "admm") == [0, 1]


def test_compare_mnist_with_a_budget(tmp_path):
    """IDX files (a t10k test split), width via --hidden, the same training-time budget for ADMM and BPTT:
    each stops after the step that spent it, and the results say how much each used."""
    from test_idx import make_root
    root = make_root(tmp_path / "mnist", n_train=150, n_test=50)
    out = tmp_path / "cmp"
    budget = 0.4
    assert main(["compare", "--data-dir", str(root), "--depths", "1", "2", "--seeds", "1", "--hidden", "12",
                 "--time-steps", "5", "--budget-s", str(budget), "--bptt-batch-size", "16", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["data"]["dataset"] == "mnist" and res["config"]["depths"] == [1, 2]
    assert res["config"]["hidden_width"] == 12 and res["config"]["budget_s"] == budget
    assert res["config"]["admm"]["iterations"] == 10000 and res["config"]["bptt"]["epochs"] == 10000
    assert (res["split"]["n_train"], res["split"]["n_val"], res["split"]["n_test"]) == (120, 30, 50)
    assert res["split"]["test_source"] == "t10k files"
    for r in res["runs"]:
        if r["method"] == "floor":
            continue
        # stopped by the budget, after the step that spent it (a step here takes well under a second)
        assert r["status"] == "budget" and budget <= r["train_s"] < budget + 5, (r["method"], r["train_s"])
        assert r["curve"][-1][0] == pytest.approx(r["train_s"])
    assert all(r["iterations"] >= 1 for r in res["runs"] if r["method"] == "admm")
    assert all(r["epochs"] > 0 for r in res["runs"] if r["method"] == "bptt")
    md = (out / "results.md").read_text()
    assert "# ADMM vs BPTT vs random-feature floor on MNIST" in md and f"budget of {budget:g} s" in md
    assert "Time actually used: ADMM used" in md and "| t = 0 s | t = 0 s |" not in md
    row = next(r for r in res["summary"] if r["method"] == "admm" and r["depth"] == 1)
    assert set(row["val_at"]) == {"0.25", "0.5", "1"} and row["time_axis_s"] == budget


def test_sweep_2x2_with_extra_param(tmp_path):
    out = tmp_path / "sweep"
    rc = main(["sweep", "--rho-grid", "0.5", "1", "--beta-grid", "0.001", "0.01", "--param", "weight_step", "1", "100",
               "--hidden", "8", "--iterations", "2", "--time-steps", "5", "--val-fraction", "0.4", "--test-fraction", "0.4",
               "--out", str(out)])
    assert rc == 0
    for name in ("sweep.md", "sweep.json", "sweep.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    res = json.loads((out / "sweep.json").read_text())
    assert res["rho"] == [0.5, 1.0] and res["beta"] == [0.001, 0.01]
    assert res["param"] == {"name": "weight_step", "values": [1.0, 100.0]}
    assert len(res["points"]) == 8
    for p in res["points"]:
        assert p["status"] == "ok" and _in_unit(p["val_accuracy"]) and len(p["val_curve"]) == 2
    assert res["best"]["val_accuracy"] == max(p["val_accuracy"] for p in res["points"])
    md = (out / "sweep.md").read_text()
    assert "## weight_step = 1.0" in md and "| β \\ ρ | 0.5 | 1 |" in md


def test_sweep_bad_param_is_one_line_error(tmp_path, capsys):
    assert main(["sweep", "--param", "no_such_setting", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("admm-snn: error: --param no_such_setting") and err.count("\n") == 1
    assert main(["sweep", "--param", "rho", "1", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--param", "iterations", "x", "--out", str(tmp_path)]) == 2


def test_helpers():
    curve = [(1.0, 0.5), (2.0, 0.85), (3.0, 0.9), (4.0, 0.88)]
    assert time_to_fraction(curve, 0.9, 0.9) == 2.0  # 0.85 >= 0.81
    assert time_to_fraction(curve, 0.9, 0.95) == 3.0  # 0.85 < 0.855 <= 0.9
    assert time_to_fraction([(1.0, 0.1)], 0.9, 0.9) is None
    ms = _mean_std([0.5, 0.7])
    assert ms["mean"] == pytest.approx(0.6) and ms["std"] == pytest.approx(0.1414213562) and ms["n"] == 2
    assert _mean_std([0.3]) == {"mean": 0.3, "std": 0.0, "n": 1}
    assert _mean_std([None]) is None
    assert coerce_setting("weight_step", ["1e4", "3e4"]) == [1e4, 3e4]
    assert coerce_setting("proximal", ["true", "0"]) == [True, False]
    assert coerce_setting("rho_out", ["none", "2"]) == [None, 2.0]
    with pytest.raises(SettingsError):
        coerce_setting("beta", ["1"])
    import torch
    with PeakMemory() as m:
        x = torch.ones(64, 2 ** 20 // 4)  # 64 MiB
        x += 1
        del x
    assert m.bytes >= 32 * 2 ** 20
