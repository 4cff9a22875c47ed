"""``admm-snn compare --arch``: convolutional rows (ADMM, BPTT, floor) next to the dense rows, on a tiny
subset of the real N-MNIST recordings."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("snntorch")
pytest.importorskip("matplotlib")

from admm_snn.cli import main  # noqa: E402
from admm_snn.experiments.compare import CompareConfig  # noqa: E402
from admm_snn.errors import SettingsError  # noqa: E402

ARCH = "4c5-p4-16"
TINY = ["--limit", "80", "--time-steps", "5", "--seeds", "1", "--iterations", "1", "--bptt-epochs", "1",
        "--hidden-width", "16"]


def _unit(x) -> bool:
    return isinstance(x, (int, float)) and 0.0 <= x <= 1.0


def test_conv_and_dense_rows_in_one_run(nmnist_root, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--data-dir", str(nmnist_root), *TINY, "--arch", ARCH, "--depths", "1",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    assert res["config"]["archs"] == [ARCH] and res["config"]["depths"] == [1]
    runs = res["runs"]
    conv = {r["method"]: r for r in runs if r["arch"] == ARCH}
    dense = {r["method"]: r for r in runs if r["arch"] is None}
    assert set(conv) == set(dense) == {"admm", "bptt", "floor"} and len(runs) == 6
    assert all(r["depth"] is None for r in conv.values()) and all(r["depth"] == 1 for r in dense.values())
    for r in conv.values():
        assert _unit(r["test_accuracy"]) and _unit(r["val_accuracy"]), r["method"]
        assert len(r["firing_rate"]) == 2 and all(_unit(x) for x in r["firing_rate"])  # 4c5 and 16
        assert r["train_s"] > 0 and math.isfinite(r["train_s"]) and r["synaptic_ops"] is None
        assert r["curve"] and all(t >= 0 and _unit(a) for t, a in r["curve"])
    admm, floor, bptt = conv["admm"], conv["floor"], conv["bptt"]
    # ADMM: the start (iteration 0) and one iteration, the validation split choosing between them
    assert admm["iterations"] == 1 and [h["iteration"] for h in admm["history"]] == [0, 1]
    assert admm["val_accuracy"] == max(h["val_accuracy"] for h in admm["history"])
    assert admm["curve"][-1][0] == pytest.approx(admm["train_s"])
    # the floor is conv ADMM's starting point: same seed and settings
    assert res["conv_admm_starts_at_floor"] and admm["curve"][0][1] == floor["val_accuracy"]
    # the dense rows have the loss on 3 steps (the N-MNIST default), so dense ADMM no longer starts at its floor
    assert res["config"]["admm"]["loss_steps"] == 3 and not res["admm_starts_at_floor"]
    assert res["config"]["arch_loss_steps"] == 1
    if admm["best_iteration"] == 0:
        assert admm["test_accuracy"] == floor["test_accuracy"]
    assert bptt["epochs"] == 1.0 and len(bptt["history"]) == 1
    # one summary row per method and row, the conv row labelled by its architecture
    keys = {(r["method"], r["arch"], r["depth"]) for r in res["summary"]}
    assert keys == {(m, ARCH, None) for m in conv} | {(m, None, 1) for m in dense}
    md = (out / "results.md").read_text()
    table = md.split("\n\n")[2]
    assert f"| {ARCH} (conv) |" in table and "| 1 |" in table
    # every row trains on shifted frames (the default 1 pixel on N-MNIST), conv rows as the dense ones
    assert res["config"]["augment_shift"] == 1 and "Augmentation of every row" in md
    assert "caps and augmentation as the dense rows" in md and "train_bptt_conv" in md
    from admm_snn.io import load_model
    model = load_model(out / "best_admm_conv.safetensors")
    assert model["arch"] == ARCH and list(model["input_shape"]) == [2, 34, 34]
    assert (out / "accuracy_vs_time.png").stat().st_size > 0


def test_conv_rows_only(nmnist_root, tmp_path):
    """--arch without --depths: conv rows alone (here only the floor, which is quick)."""
    out = tmp_path / "cmp"
    assert main(["compare", "--data-dir", str(nmnist_root), *TINY, "--arch", ARCH, "--methods", "floor",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["depths"] == [] and [r["arch"] for r in res["runs"]] == [ARCH]
    assert not (out / "accuracy_vs_depth.png").exists() and "accuracy_vs_time.png" in res["plots"]
    assert "Augmentation of the dense rows" not in (out / "results.md").read_text()


@pytest.mark.parametrize("extra, start", [
    (["--arch", "4x5"], "admm-snn: error: architecture '4x5': cannot read '4x5'"),
    (["--arch", ARCH, "--order", "paper"], "admm-snn: error: order='paper' is not supported by the convolutional"),
    (["--arch", ARCH, "--metrics-every", "2"], "admm-snn: error: metrics_every=2 is not supported with conv rows"),
    (["--arch", "4c50-16"], "admm-snn: error: layer 1 (4c50): kernel 50"),
])
def test_refusals_are_one_line(nmnist_root, tmp_path, capsys, extra, start):
    out = tmp_path / "cmp"
    assert main(["compare", "--data-dir", str(nmnist_root), *TINY, *extra, "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1, err
    assert not (out / "results.json").exists()


def test_config_needs_a_row():
    from admm_snn.admm.settings import ADMMSettings
    from admm_snn.baselines.bptt import BPTTSettings
    from admm_snn.data.options import DataOptions
    with pytest.raises(SettingsError, match="nothing to compare"):
        CompareConfig(data=DataOptions(), admm=ADMMSettings(), bptt=BPTTSettings(), depths=[], archs=[])
    with pytest.raises(SettingsError, match="more than once"):
        CompareConfig(data=DataOptions(), admm=ADMMSettings(), bptt=BPTTSettings(), depths=[], archs=["8c5", "8c5"])
