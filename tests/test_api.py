"""The public API at the top level: every name of ``admm_snn.__all__`` resolves, the lazily loaded parts
(tonic, scikit-learn) stay unloaded until used, and train -> save -> load -> predict -> export works
with the top-level names alone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import admm_snn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_public_name_resolves():
    assert len(admm_snn.__all__) == len(set(admm_snn.__all__))
    for name in admm_snn.__all__:
        assert getattr(admm_snn, name) is not None, name
    assert set(admm_snn.__all__) <= set(dir(admm_snn))
    assert callable(admm_snn.train) and admm_snn.train.__module__ == "admm_snn.train"
    with pytest.raises(AttributeError):
        admm_snn.no_such_name  # noqa: B018


def test_import_does_not_load_tonic_or_sklearn():
    code = ("import sys, admm_snn, admm_snn.cli; "
            "print(sorted(m for m in ('tonic', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_save_load_predict_export(tmp_path):
    from admm_snn import (ADMMSettings, LIFParams, export_model, load_digits, load_model, predict, save_model,
                          stratified_split, train)
    ds = load_digits(time_steps=15)
    tr, te = stratified_split(ds.labels, [0.8, 0.2], seed=0)
    settings = ADMMSettings(iterations=3)
    result = train(ds.subset(tr).time_major(), ds.labels[tr], [32], settings, progress=False)
    pred = predict(result.weights, ds.subset(te).time_major(), settings.lif)
    assert float((pred == ds.labels[te]).float().mean()) > 0.5
    save_model(tmp_path / "model.safetensors", result.weights, settings.delta, settings.theta)
    model = load_model(tmp_path / "model.safetensors")
    again = predict(model["weights"], ds.subset(te).time_major(), LIFParams(model["delta"], model["theta"]))
    assert torch.equal(pred, again)
    pytest.importorskip("nir")
    report = export_model(tmp_path / "model.safetensors", tmp_path / "model.nir")
    assert (tmp_path / "model.nir").is_file() and isinstance(report, dict)
