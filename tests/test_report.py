"""The per-iteration report of admm_snn.train: bounded by fixed subsamples of the training and validation
data (so its cost does not grow with N), equal to the full report where nothing is left out; and the
wall-clock budget of a training run."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm.lagrangian import residuals
from admm_snn.admm.settings import ADMMSettings
from admm_snn.errors import SettingsError
from admm_snn.metrics import forward_counts
from admm_snn.train import accuracy_and_rates, iteration_metrics, lagrangian_of, report_indices, spike_gap, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(n=60, T=6, n_in=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, n, n_in, generator=g) < 0.3).to(torch.uint8)
    labels = torch.arange(n) % 3
    val = ((torch.rand(T, 40, n_in, generator=g) < 0.3).to(torch.uint8), torch.arange(40) % 3)
    return frames, labels, val


def test_default_report_size():
    from admm_snn.train import report_size
    assert [report_size(n) for n in (50, 500, 3000, 18000, 60000)] == [50, 100, 300, 1800, 2000]
    assert report_size(3000, 0) == 3000 and report_size(3000, 250) == 250 and report_size(30, 250) == 30


def test_report_indices_are_fixed_and_bounded():
    a = report_indices(100, 30)
    assert a.shape == (30,) and torch.equal(a, torch.sort(a).values) and len(set(a.tolist())) == 30
    assert torch.equal(a, report_indices(100, 30)) and not torch.equal(a, report_indices(100, 30, seed=1))
    assert report_indices(100, 100) is None and report_indices(100, 0) is None and report_indices(100, None) is None


def test_subsampled_report_measures_the_subsample():
    X, lab, val = _problem()
    s = ADMMSettings(iterations=3)
    res = train(X, lab, [8], s, val=val, progress=False, report_samples=25, val_samples=15)
    idx, vidx = report_indices(60, 25), report_indices(40, 15, seed=0x5EED + 1)
    last = res.history[-1]
    assert last["report_samples"] == 25 and last["val_samples"] == 15 and last["report_s"] >= 0
    acc, rates = accuracy_and_rates(res.final_weights, X[:, idx], lab[idx], s.lif)
    assert last["train_accuracy"] == acc and last["firing_rate"] == pytest.approx(rates, abs=1e-12)
    vacc, _ = accuracy_and_rates(res.final_weights, val[0][:, vidx], val[1][vidx], s.lif)
    assert last["val_accuracy"] == vacc
    # the report never touches the training: same weights as with the full report
    full = train(X, lab, [8], s, val=val, progress=False, report_samples=0, val_samples=0)
    assert all(torch.equal(a, b) for a, b in zip(res.final_weights, full.final_weights))
    assert full.history[-1]["report_samples"] == 60 and full.history[-1]["val_samples"] == 40
    # the default: at least 100 samples, so all 60 here
    assert train(X, lab, [8], s, val=val, progress=False).history[-1]["report_samples"] == 60


def test_report_of_every_sample_equals_the_full_report():
    X, lab, val = _problem()
    s = ADMMSettings(iterations=2)
    st = train(X, lab, [8], s, progress=False).state
    y = torch.nn.functional.one_hot(lab, 3).float()
    full = iteration_metrics(st, X, y, lab, s)
    every = iteration_metrics(st, X, y, lab, s, sample=torch.arange(60))
    for k in ("lagrangian", "loss", "train_accuracy", "residual_output"):
        assert every[k] == pytest.approx(full[k], rel=1e-9), k
    # the Lagrangian of a subsample, scaled, estimates the total
    half = iteration_metrics(st, X, y, lab, s, sample=report_indices(60, 30))
    assert half["report_samples"] == 30 and half["lagrangian"] == pytest.approx(full["lagrangian"], rel=0.5)
    # residuals from the Lagrangian's terms, spike gap and rates from one simulation: as the direct ones
    direct = residuals(st, X, s.lif)
    assert full["residual_output"] == pytest.approx(direct["output"], rel=1e-5)
    assert full["residual_dynamics"] == pytest.approx(direct["dynamics"], rel=1e-5, abs=1e-12)
    assert full["residual_spike"] == pytest.approx(direct["spike"], rel=1e-5, abs=1e-12)
    assert full["spike_gap"] == pytest.approx(spike_gap(st, X, s.lif), rel=1e-6)
    c = forward_counts(st.weights, X, lab, s.lif, spikes=st.spikes, chunk=7)  # chunks add up
    acc, gap = c["correct"] / c["n"], [g / u for g, u in zip(c["gap"], c["units"])]
    assert (acc, gap) == (full["train_accuracy"], pytest.approx(full["spike_gap"], rel=1e-9))
    assert terms_total(st, X, y, s) == pytest.approx(full["lagrangian"], rel=1e-12)


def terms_total(st, X, y, s):
    return lagrangian_of(st, X, y, s)["lagrangian"]


def test_budget_stops_the_iterations(monkeypatch):
    X, lab, val = _problem()
    s = ADMMSettings(iterations=50)
    res = train(X, lab, [8], s, val=val, progress=False, budget_s=1e-9)
    assert res.status == "budget" and res.iterations == 0 and res.history == [] and res.init_s > 0
    # iterations of 50 ms and a budget of 0.2 s: the iteration that spends it is the last one, and it is
    # reported even off the metrics_every grid
    import time
    import importlib
    T = importlib.import_module("admm_snn.train")  # the module (admm_snn.train is also the function)
    iterate = T.S.iterate

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return iterate(*args, **kwargs)
    monkeypatch.setattr(T.S, "iterate", slow)
    res = train(X, lab, [8], s, val=val, progress=False, budget_s=0.2, metrics_every=7)
    assert res.status == "budget" and 1 <= res.iterations < 50
    assert res.history[-1]["iteration"] == res.iterations
    assert res.init_s + res.compute_s >= 0.2 > res.init_s + res.compute_s - res.history[-1]["seconds"]
    done = train(X, lab, [8], s.replace(iterations=2), progress=False, budget_s=1e6)
    assert done.status == "finished" and done.iterations == 2


@pytest.mark.parametrize("kw", [dict(report_samples=-1), dict(val_samples=1.5), dict(budget_s=0),
                                dict(budget_s=float("nan")), dict(budget_s=True)])
def test_bad_report_settings(kw):
    X, lab, _ = _problem(n=12)
    with pytest.raises(SettingsError):
        train(X, lab, [4], ADMMSettings(iterations=1), progress=False, **kw)
