"""Deep networks that start as their first layer: identity initialisation of the later hidden layers
(layer-by-layer growth with every layer inserted at once)."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import identity_layers, random_weights
from admm_snn.errors import SettingsError
from admm_snn.network import LIFParams, forward, predict


def _frames(seed=0, T=12, N=40, n=50, p=0.15):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, N, n, generator=g) < p).float()


@pytest.mark.parametrize("gain,exact", [(1.05, True), (1.1, True), (1.0, False)])
def test_identity_layer_copies_spike_trains(gain, exact):
    """With δ = 0.95, θ = 1 and subtract reset, W = gθ·I with g a little above 1 reproduces the spike
    train of the layer below exactly; g = 1 loses spikes to the leak."""
    X = _frames(1, T=30, N=60, n=40, p=0.3)
    p = LIFParams(0.95, 1.0)
    ws = random_weights([40, 32, 32, 32, 5], 3.0, torch.Generator().manual_seed(0), torch.float64, "cpu")
    ws = identity_layers(ws, gain, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(ws[1], gain * torch.eye(32, dtype=torch.float64))
    s = forward(ws, X.double(), p).spikes
    assert float(s[0].mean()) > 0.05  # the first layer fires
    same = torch.equal(s[0], s[1]) and torch.equal(s[0], s[2])
    assert same == exact


def test_identity_deep_network_starts_as_the_one_layer_network():
    """Same seed: the 3-layer network's first layer is the 1-layer network's, its last hidden layer
    emits the same spikes, and the fitted readout gives the same predictions."""
    X = _frames(2)
    labels = torch.arange(X.shape[1]) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    s = ADMMSettings(deep_init="identity")
    one = S.init_state(X, y, [50, 24, 4], s, torch.Generator().manual_seed(3))
    deep = S.init_state(X, y, [50, 24, 24, 24, 4], s, torch.Generator().manual_seed(3))
    assert torch.equal(one.weights[0], deep.weights[0])
    assert torch.equal(one.spikes[0], deep.spikes[-1])
    torch.testing.assert_close(one.weights[-1], deep.weights[-1], rtol=1e-5, atol=1e-6)
    p = s.lif
    assert torch.equal(predict(one.weights, X, p), predict(deep.weights, X, p))
    # random deep layers compute something else
    rnd = S.init_state(X, y, [50, 24, 24, 24, 4], s.replace(deep_init="random"), torch.Generator().manual_seed(3))
    assert not torch.equal(rnd.spikes[-1], one.spikes[0])


def test_identity_noise_and_unequal_widths():
    ws = random_weights([10, 6, 8, 4, 3], 1.0, torch.Generator().manual_seed(0), torch.float64, "cpu")
    out = identity_layers(ws, 1.1, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(out[0], ws[0]) and torch.equal(out[-1], ws[-1])  # first and output layers untouched
    assert out[1].shape == (8, 6) and out[2].shape == (4, 8)
    d = out[1] - 1.1 * torch.eye(8, 6, dtype=torch.float64)
    assert 0.05 < float(d.std()) * 6 ** 0.5 < 1.0  # the random part, std 0.5/sqrt(fan-in)


@pytest.mark.parametrize("field,value", [("deep_init", "copy"), ("identity_gain", 0.0), ("identity_noise", -1.0)])
def test_bad_identity_settings(field, value):
    with pytest.raises(SettingsError, match=field):
        ADMMSettings(**{field: value})


def _growing(seed, grow_every):
    """A 3-hidden-layer network with identity start on random frames, and one solver iteration."""
    X = _frames(seed)
    labels = torch.arange(X.shape[1]) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    s = ADMMSettings(deep_init="identity", grow_every=grow_every)
    g = torch.Generator().manual_seed(0)
    cache = S.SolverCache()
    state = S.init_state(X, y, [50, 16, 16, 16, 4], s, g, cache)
    return X, y, s, state, lambda: S.iterate(state, X, y, s, cache, g)


def test_growth_trains_one_more_layer_every_k_iterations():
    """grow_every=1: iteration 1 trains hidden layer 1 (and the output), iteration 2 layers 1-2, ...;
    a layer not yet grown keeps its identity start exactly."""
    X, y, s, state, step = _growing(4, grow_every=1)
    start = [w.clone() for w in state.weights]
    for it in range(1, 4):
        before = [w.clone() for w in state.weights]
        step()
        for l in range(3):
            if l < it:
                assert not torch.equal(state.weights[l], before[l]), (it, l)
            else:
                assert torch.equal(state.weights[l], start[l]), (it, l)
        assert not torch.equal(state.weights[-1], before[-1])


def test_grown_network_computes_its_trained_lower_layers():
    """While the upper layers are still at the identity, the deep network's predictions are those of the
    network made of its trained first layer and its readout."""
    X, y, s, state, step = _growing(5, grow_every=10)
    for _ in range(3):
        step()
    deep = forward(state.weights, X, s.lif)
    shallow = forward([state.weights[0], state.weights[-1]], X, s.lif)
    assert torch.equal(deep.spikes[-1], shallow.spikes[0])
    assert torch.equal(predict(state.weights, X, s.lif), predict([state.weights[0], state.weights[-1]], X, s.lif))


def test_grow_every_must_be_a_count():
    with pytest.raises(SettingsError, match="grow_every"):
        ADMMSettings(grow_every=-1)


def test_rho_decay_is_the_per_layer_penalties_it_names():
    """rho_decay=γ gives hidden layer l of n the penalty ρ·γ^(n−1−l) (the top hidden layer ρ) and is
    bitwise the solver with those per-layer penalties set by hand, whose blocks are proven exact
    (tests/test_adaptive.py); the Lagrangian report uses the same values."""
    from admm_snn.admm import penalties as P
    X, y, _, _, _ = _growing(6, grow_every=0)
    s = ADMMSettings(deep_init="identity", grow_every=0, rho=1.3, rho_decay=0.5)
    runs = []
    for decay, rhos in ((0.5, None), (1.0, [1.3 * 0.25, 1.3 * 0.5, 1.3])):
        st = s.replace(rho_decay=decay)
        g, cache = torch.Generator().manual_seed(0), S.SolverCache()
        state = S.init_state(X, y, [50, 16, 16, 16, 4], st, g, cache)
        if rhos is None:
            assert [P.layer_penalties(state, st, l)[0] for l in range(3)] == [1.3 * 0.25, 1.3 * 0.5, 1.3]
            assert P.lagrangian_penalties(state, st)[0] == [1.3 * 0.25, 1.3 * 0.5, 1.3]
        else:
            state.aux[P.RHO] = torch.tensor(rhos, dtype=torch.float64)
            state.aux[P.BETA] = torch.full((3,), st.beta, dtype=torch.float64)
        for _ in range(2):
            S.iterate(state, X, y, st, cache, g)
        runs.append(state)
    for a, b in zip(runs[0].weights + runs[0].spikes, runs[1].weights + runs[1].spikes):
        assert torch.equal(a, b)


def test_rho_decay_leaves_one_layer_networks_unchanged():
    X = _frames(7)
    labels = torch.arange(X.shape[1]) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    out = []
    for decay in (1.0, 0.3):
        s = ADMMSettings(rho_decay=decay)
        g, cache = torch.Generator().manual_seed(0), S.SolverCache()
        state = S.init_state(X, y, [50, 16, 4], s, g, cache)
        for _ in range(2):
            S.iterate(state, X, y, s, cache, g)
        out.append(state.weights)
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_rho_decay_lets_the_output_signal_reach_the_first_of_seven_layers():
    """Seven identity-started hidden layers: after one sweep of the state blocks from the forward
    states, the first layer's spikes moved about 2^-6 of the top layer's move with one ρ (each identity
    layer passes on about half), and several times more with ρ_l decaying by 0.3 per layer."""
    X = _frames(8, T=12, N=40, n=50, p=0.2)
    labels = torch.arange(X.shape[1]) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    ratio = {}
    for decay in (1.0, 0.3):
        s = ADMMSettings(deep_init="identity", grow_every=0, rho_decay=decay, target_gate=0.0)
        g, cache = torch.Generator().manual_seed(0), S.SolverCache()
        state = S.init_state(X, y, [50] + [16] * 7 + [4], s, g, cache)
        before = [a.clone() for a in state.spikes]
        for l in reversed(range(7)):  # the hidden sweep's spike blocks, top down, without the weights
            S.update_spikes_all_t(state, X, s, l)
            S.update_potentials_red_black(state, X, s, l)
        moved = [float((a - b).norm()) for a, b in zip(state.spikes, before)]
        assert moved[-1] > 0
        ratio[decay] = moved[0] / moved[-1]
    assert ratio[1.0] < 0.1
    assert ratio[0.3] > 3 * ratio[1.0]


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan")])
def test_bad_rho_decay(value):
    with pytest.raises(SettingsError, match="rho_decay"):
        ADMMSettings(rho_decay=value)
