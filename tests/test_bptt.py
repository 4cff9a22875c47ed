"""Tests of the snnTorch BPTT baseline: same network semantics as admm_snn.network, training, seeding."""

import pytest
import torch

pytest.importorskip("snntorch")

from admm_snn.baselines.bptt import BPTTNet, BPTTSettings, train_bptt  # noqa: E402
from admm_snn.errors import DataError, SettingsError  # noqa: E402
from admm_snn.network import LIFParams, forward, predict  # noqa: E402


def _dyadic(shape, gen, step=1 / 16, lo=-12, hi=20):
    """Random weights that are multiples of 1/16, so all input currents are exact in float32."""
    return torch.randint(lo, hi, shape, generator=gen).to(torch.float32) * step


def _compare(weights, frames, params):
    net = BPTTNet.from_weights(weights, params)
    with torch.no_grad():
        out, hid_z, hid_a = net(frames, record=True)
    ref = forward(weights, frames, params)
    assert len(hid_z) == len(ref.spikes) == len(weights) - 1
    for z, a, rz, ra in zip(hid_z, hid_a, ref.potentials[:-1], ref.spikes):
        assert torch.equal(a, ra)
        assert torch.equal(z, rz)
    assert torch.equal(out, ref.output)
    return ref


def test_hand_built_network_matches_forward_including_double_firing():
    params = LIFParams(delta=0.95, theta=1.0)
    T, N = 8, 5
    gen = torch.Generator().manual_seed(3)
    frames = (torch.rand(T, N, 4, generator=gen) < 0.5).float()
    frames[:, :, 0] = 1.0  # input 0 always on
    w1 = torch.tensor([[0.75, 0.0, 0.0, 0.0],     # driven every step: fires repeatedly
                       [0.25, 0.5, -0.5, 0.5],
                       [0.0, 0.5, 0.5, 0.25]])
    w2 = torch.tensor([[1.0, -0.5, 0.5],
                       [-0.25, 0.75, 0.5]])
    ref = _compare([w1, w2], frames, params)
    # The exact trace of neuron 0: 0.75, 1.4625 (spike), 0.95*1.4625 + 0.75 - 1 = 1.139375 (spike), ...
    z0 = ref.potentials[0][:, 0, 0]
    assert torch.allclose(z0[:3], torch.tensor([0.75, 1.4625, 1.139375]))
    assert ref.spikes[0][:, 0, 0].sum() >= 2
    assert ref.spikes[0][1, 0, 0] == 1 and ref.spikes[0][2, 0, 0] == 1


def test_strict_threshold_and_reset_by_previous_spike():
    """z exactly θ does not fire; reset is subtracted one step after the spike."""
    params = LIFParams(delta=1.0, theta=1.0)
    frames = torch.tensor([[1.0], [1.0], [0.0], [1.0]]).reshape(4, 1, 1)
    w1 = torch.tensor([[0.5]])
    w2 = torch.tensor([[1.0]])
    ref = _compare([w1, w2], frames, params)
    # z: 0.5, 1.0 (= θ: no spike), 1.0, 1.5 (spike)
    assert ref.potentials[0][:, 0, 0].tolist() == [0.5, 1.0, 1.0, 1.5]
    assert ref.spikes[0][:, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    w1 = torch.tensor([[1.5]])
    ref = _compare([w1, w2], frames, params)
    # z: 1.5 (spike), 1.5 + 1.5 - 1 = 2 (spike), 2 + 0 - 1 = 1 (no), 1 + 1.5 - 0 = 2.5 (spike)
    assert ref.potentials[0][:, 0, 0].tolist() == [1.5, 2.0, 1.0, 2.5]
    assert ref.spikes[0][:, 0, 0].tolist() == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("hidden", [[], [16], [16, 12]])
def test_random_networks_match_forward(hidden):
    params = LIFParams(delta=0.9, theta=1.0)
    gen = torch.Generator().manual_seed(len(hidden))
    sizes = [20, *hidden, 3]
    weights = [_dyadic((sizes[i + 1], sizes[i]), gen) for i in range(len(sizes) - 1)]
    frames = (torch.rand(12, 7, 20, generator=gen) < 0.3).float()
    ref = _compare(weights, frames, params)
    if hidden:
        assert 0.0 < float(ref.spikes[0].mean()) < 1.0  # the test exercises both spikes and silence


def _spike_dataset(n, gen, T=10, n_in=30, classes=3):
    """Class c makes inputs of group c fire with probability 0.5, all others with 0.1."""
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=gen)]
    group = torch.arange(n_in) * classes // n_in  # (n_in,)
    p = torch.where(group[None, :] == labels[:, None], 0.5, 0.1)  # (n, n_in)
    frames = (torch.rand(T, n, n_in, generator=gen) < p[None]).float()
    return frames, labels


def test_training_separates_synthetic_spike_classes():
    gen = torch.Generator().manual_seed(0)
    x, y = _spike_dataset(100, gen)
    xt, yt = _spike_dataset(90, gen)
    params = LIFParams()
    settings = BPTTSettings(epochs=20, lr=1e-2, batch_size=20, seed=1)
    res = train_bptt(x, y, [16], params, settings)
    assert [w.shape for w in res.weights] == [(16, 30), (3, 16)]
    assert all(w.dtype == torch.float32 for w in res.weights)
    acc = float((predict(res.weights, xt, params) == yt).float().mean())
    assert acc >= 0.8, acc  # chance is 1/3
    assert len(res.history) == 20 and res.history[-1]["train_acc"] > 0.8
    assert res.history[-1]["wall_s"] <= res.wall_s
    assert res.peak_memory_bytes >= 0


def test_validation_picks_best_epoch_and_reports_forward_accuracy():
    gen = torch.Generator().manual_seed(1)
    x, y = _spike_dataset(60, gen)
    xv, yv = _spike_dataset(30, gen)
    params = LIFParams()
    res = train_bptt(x, y, [8], params, BPTTSettings(epochs=6, lr=1e-2, batch_size=20), xv, yv)
    accs = [h["val_acc"] for h in res.history]
    assert res.best_epoch == accs.index(max(accs)) + 1
    assert float((predict(res.weights, xv, params) == yv).float().mean()) == pytest.approx(max(accs))


def test_same_seed_same_weights():
    gen = torch.Generator().manual_seed(2)
    x, y = _spike_dataset(40, gen)
    params = LIFParams()
    s = BPTTSettings(epochs=2, lr=5e-3, batch_size=16, seed=7)
    a = train_bptt(x, y, [8, 6], params, s)
    b = train_bptt(x, y, [8, 6], params, s)
    c = train_bptt(x, y, [8, 6], params, BPTTSettings(epochs=2, lr=5e-3, batch_size=16, seed=8))
    assert all(torch.equal(u, v) for u, v in zip(a.weights, b.weights))
    assert not all(torch.equal(u, v) for u, v in zip(a.weights, c.weights))


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(lr=0.0), dict(lr=float("nan")),
                                    dict(batch_size=0), dict(weight_decay=-1.0),
                                    dict(surrogate_slope=0.0), dict(init_scale=-1.0),
                                    dict(seed=1.5)])
def test_bad_settings_raise_one_line(kwargs):
    with pytest.raises(SettingsError) as e:
        BPTTSettings(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_data_raise():
    x = torch.zeros(5, 4, 3)
    with pytest.raises(DataError):
        train_bptt(x[0], torch.zeros(4, dtype=torch.long), [2], LIFParams())
    with pytest.raises(DataError):
        train_bptt(x, torch.zeros(3, dtype=torch.long), [2], LIFParams())
    with pytest.raises(DataError):
        train_bptt(x, torch.zeros(4), [2], LIFParams())
    with pytest.raises(SettingsError):
        train_bptt(x, torch.zeros(4, dtype=torch.long), [0], LIFParams())
    with pytest.raises(SettingsError):
        train_bptt(x, torch.zeros(4, dtype=torch.long), [2], LIFParams(), val_frames=x)


def test_init_rate_keeps_a_deep_network_firing():
    import torch
    from admm_snn.baselines.bptt import BPTTSettings, train_bptt
    from admm_snn.network import LIFParams, forward
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(10, 40, 30, generator=g) < 0.1).float()
    labels = torch.arange(40) % 2
    p = LIFParams(0.95, 1.0)
    res = train_bptt(frames, labels, [16] * 5, p, BPTTSettings(epochs=1, init_rate=0.1, lr=1e-9))
    rates = [float(a.mean()) for a in forward(res.weights, frames, p).spikes]
    assert min(rates) > 0.03, rates


def test_budget_stops_within_an_epoch(monkeypatch):
    """A training-time budget stops BPTT after the mini-batch that spent it; that partial epoch is validated
    and recorded with its number of mini-batches; validation frames stay in their own (uint8) dtype."""
    import time
    from admm_snn.baselines import bptt as B
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(5, 64, 10, generator=g) < 0.3).to(torch.uint8)
    y = torch.arange(64) % 2
    step = B.torch.optim.Adam.step

    def slow_step(self, *a, **k):
        time.sleep(0.02)
        return step(self, *a, **k)
    monkeypatch.setattr(B.torch.optim.Adam, "step", slow_step)
    res = B.train_bptt(X, y, [6], LIFParams(), B.BPTTSettings(epochs=50, batch_size=8), X[:, :20], y[:20],
                       budget_s=0.1)
    last = res.history[-1]
    assert len(res.history) == 1 and last["partial"] and 1 <= last["batches"] < 8
    assert last["wall_s"] >= 0.1 and "val_acc" in last and res.best_epoch == 1
    with pytest.raises(SettingsError):
        B.train_bptt(X, y, [6], LIFParams(), B.BPTTSettings(epochs=1), budget_s=0)
