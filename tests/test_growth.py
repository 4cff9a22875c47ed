"""Growth on the shallow network: while layer-by-layer growth keeps the layers above the grown ones at
exact identity copies, an iteration runs on the network of the grown layers (solver.iterate), which
computes what the deep network computes; a layer's states are formed when it grows."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import ADMMState
from admm_snn.network import LIFParams, forward, predict
from admm_snn.train import train


def _copy_holds(c: float, delta: float, theta: float, T: int = 80, seed: int = 0) -> bool:
    """Brute force: does W = c·I copy every spike train of a batch of random and adversarial ones?"""
    g = torch.Generator().manual_seed(seed)
    trains = [(torch.rand(T, 300, generator=g) < p).double() for p in (0.05, 0.3, 0.7, 0.95)]
    ones = torch.ones(T, 1, dtype=torch.float64)
    burst = torch.zeros(T, 1, dtype=torch.float64)
    burst[: T // 2] = 1  # a long burst, then silence: the largest history at a step without input
    single = torch.zeros(T, 1, dtype=torch.float64)
    single[T // 3] = 1
    alternate = torch.zeros(T, 1, dtype=torch.float64)
    alternate[::2] = 1
    X = torch.cat(trains + [ones, burst, single, alternate], dim=1)  # (T, N) spike trains of one neuron
    readout = torch.ones(1, 1, dtype=torch.float64)
    trace = forward([c * torch.eye(1, dtype=torch.float64), readout], X[:, :, None], LIFParams(delta, theta))
    return torch.equal(trace.spikes[0], X[:, :, None])


@pytest.mark.parametrize("c,delta,theta", [
    (1.1, 0.95, 1.0), (1.06, 0.95, 1.0), (1.104, 0.95, 1.0), (2.2, 0.95, 2.0), (1.7, 0.5, 1.0),
    (1.02, 0.99, 1.0), (1.0, 0.95, 1.0), (1.04, 0.95, 1.0), (1.2, 0.95, 1.0), (1.3, 0.5, 1.0),
    (1.5, 1.0, 1.0), (1.0, 1.0, 1.0), (0.9, 0.95, 1.0), (3.0, 0.9, 1.0)])
def test_copies_exactly_agrees_with_brute_force(c, delta, theta):
    """The closed-form condition says "copies" only where the forward simulation copies every train
    tried, and "does not copy" only where one of them breaks (every case here is away from the edges:
    the condition holds for recordings of any length; c = 1.05 at δ = 0.95 copies for T < ∞ only)."""
    W = c * torch.eye(5, dtype=torch.float64)
    assert S.copies_exactly(W, delta, theta) == _copy_holds(c, delta, theta)


def test_copies_exactly_needs_a_scaled_identity():
    W = 1.1 * torch.eye(4)
    assert S.copies_exactly(W, 0.95, 1.0)
    V = W.clone()
    V[0, 1] = 1e-6
    assert not S.copies_exactly(V, 0.95, 1.0)  # off-diagonal entry
    V = W.clone()
    V[2, 2] = 1.09
    assert not S.copies_exactly(V, 0.95, 1.0)  # unequal diagonal
    assert not S.copies_exactly(1.1 * torch.eye(4, 5), 0.95, 1.0)  # not square


def _problem(seed=0, T=10, N=60, n=30, classes=3):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(T, N, n, generator=g) < 0.25).float()
    labels = torch.arange(N) % classes
    return X, labels, torch.nn.functional.one_hot(labels, classes).float()


def _clone(state: ADMMState) -> ADMMState:
    return ADMMState([w.clone() for w in state.weights], [z.clone() for z in state.potentials],
                     [a.clone() for a in state.spikes], state.dual.clone(), state.iteration, dict(state.aux))


def test_growth_iterations_run_the_shallow_network():
    """Iterations 0..K-1 of a 4-hidden-layer network with growth every K = 2 are bitwise those of the
    1-hidden-layer network of its first layer and its readout; the copies' states are not touched, and
    the deep network predicts what the shallow one predicts."""
    X, labels, y = _problem()
    s = ADMMSettings(grow_every=2, momentum=0.5)
    deep = S.init_state(X, y, [30, 16, 16, 16, 16, 3], s, torch.Generator().manual_seed(1))
    shallow = _clone(deep)
    shallow = ADMMState(shallow.weights[:1] + shallow.weights[-1:], shallow.potentials[:1] + shallow.potentials[-1:],
                        shallow.spikes[:1], shallow.dual, 0, {})
    frozen_states = [(z.clone(), a.clone()) for z, a in zip(deep.potentials[1:4], deep.spikes[1:4])]
    for _ in range(2):
        S.iterate(deep, X, y, s, S.SolverCache(), torch.Generator().manual_seed(2))
        S.iterate(shallow, X, y, s, S.SolverCache(), torch.Generator().manual_seed(2))
        assert torch.equal(deep.weights[0], shallow.weights[0]) and torch.equal(deep.weights[-1], shallow.weights[-1])
        assert torch.equal(deep.dual, shallow.dual) and torch.equal(deep.potentials[-1], shallow.potentials[-1])
        assert torch.equal(predict(deep.weights, X, s.lif), predict(shallow.weights, X, s.lif))
        for (z, a), z_now, a_now in zip(frozen_states, deep.potentials[1:4], deep.spikes[1:4]):
            assert torch.equal(z, z_now) and torch.equal(a, a_now)
    assert deep.iteration == 2 and not torch.equal(deep.weights[0], S.init_state(
        X, y, [30, 16, 16, 16, 16, 3], s, torch.Generator().manual_seed(1)).weights[0])  # it trained


def test_a_grown_layer_starts_from_its_forward_simulation():
    """At iteration K the second layer grows: its states become the forward simulation of the network
    (the layer below was re-projected), and from then on it trains (its weights leave the identity)."""
    X, labels, y = _problem(1)
    s = ADMMSettings(grow_every=1)
    st = S.init_state(X, y, [30, 16, 16, 16, 3], s, torch.Generator().manual_seed(0))
    S.iterate(st, X, y, s, S.SolverCache(), torch.Generator().manual_seed(0))
    stale = st.potentials[1].clone()
    S._grow_states(st, X, s, 1)
    trace = forward(st.weights, X, s.lif)
    assert torch.equal(st.spikes[0], trace.spikes[0])  # re-projected at the end of the iteration
    assert torch.equal(st.spikes[1], trace.spikes[1])
    torch.testing.assert_close(st.potentials[1], trace.potentials[1], rtol=0, atol=1e-5)
    assert not torch.equal(stale, st.potentials[1])  # they had been left at the start's
    before = st.weights[1].clone()
    S.iterate(st, X, y, s, S.SolverCache(), torch.Generator().manual_seed(0))
    assert not torch.equal(before, st.weights[1])
    assert S.copies_exactly(st.weights[2], s.delta, s.theta)  # the third layer still waits


@pytest.mark.parametrize("change", [{"identity_noise": 0.1}, {"identity_gain": 1.0}, {"deep_init": "random"},
                                    {"grow_every": 0}, {"penalty_balance": "rho"}])
def test_no_shallow_iterations_unless_the_copies_are_exact(change):
    """Where a frozen layer is not an exact copy (or growth is off, or per-layer penalties are kept),
    iterate is bitwise its every-layer form (truncate=False)."""
    X, labels, y = _problem(2)
    s = ADMMSettings(grow_every=2).replace(**change)
    a = S.init_state(X, y, [30, 16, 16, 3], s, torch.Generator().manual_seed(0))
    b = _clone(a)
    for _ in range(3):
        S.iterate(a, X, y, s, S.SolverCache(), torch.Generator().manual_seed(0))
        S.iterate(b, X, y, s, S.SolverCache(), torch.Generator().manual_seed(0), truncate=False)
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa, wb)
    for za, zb in zip(a.potentials + a.spikes, b.potentials + b.spikes):
        assert torch.equal(za, zb)


@pytest.mark.determinism
def test_resume_across_growth_is_bitwise(tmp_path):
    """A 3-hidden-layer run interrupted while it grows resumes to bitwise the uninterrupted run."""
    X, labels, _ = _problem(3)
    val = _problem(4)[:2]
    s = ADMMSettings(iterations=6, grow_every=2, seed=3)
    a = train(X, labels, [12, 12, 12], s, val=val, out=tmp_path / "a", checkpoint_every=1, progress=False)
    train(X, labels, [12, 12, 12], s.replace(iterations=3), val=val, out=tmp_path / "b", checkpoint_every=1,
          progress=False)
    b = train(X, labels, [12, 12, 12], s, val=val, out=tmp_path / "b", checkpoint_every=1, resume=True,
              progress=False)
    for wa, wb in zip(a.final_weights, b.final_weights):
        assert torch.equal(wa, wb)
    assert a.best_iteration == b.best_iteration
    assert [m["val_accuracy"] for m in a.history] == [m["val_accuracy"] for m in b.history]


def test_report_during_growth_measures_the_deep_network():
    """The per-iteration report after a shallow iteration fills the skipped copies with their forward
    simulation (the states every other iteration gives them): no spike gap in any layer, the forward
    simulation's rates, and the Lagrangian of the state whose copies carry the forward simulation's
    states; the state itself is left as it was."""
    from admm_snn.metrics import lagrangian_of
    from admm_snn.train import iteration_metrics
    X, labels, y = _problem(5)
    s = ADMMSettings(grow_every=2)
    a = S.init_state(X, y, [30, 16, 16, 16, 3], s, torch.Generator().manual_seed(0))
    for k in range(5):
        S.iterate(a, X, y, s, S.SolverCache(), torch.Generator().manual_seed(k))
        before = [t.clone() for t in a.potentials + a.spikes]
        m = iteration_metrics(a, X, y, labels, s)
        trace = forward(a.weights, X, s.lif)
        ref = _clone(a)
        ref.potentials[:3], ref.spikes[:3] = trace.potentials[:3], trace.spikes[:3]
        assert m["spike_gap"] == [0.0, 0.0, 0.0]
        assert m["firing_rate"] == pytest.approx([float(t.double().mean()) for t in trace.spikes[:3]], abs=1e-12)
        assert m["lagrangian"] == pytest.approx(lagrangian_of(ref, X, y, s)["lagrangian"], rel=1e-5)
        for x, x_now in zip(before, a.potentials + a.spikes):
            assert torch.equal(x, x_now)
        if k < 3:  # the copies' own states are stale: the unfilled Lagrangian differs
            assert lagrangian_of(a, X, y, s)["lagrangian"] != pytest.approx(m["lagrangian"], rel=1e-3)
    assert not any(S.copies_exactly(w, s.delta, s.theta) for w in a.weights[1:3])  # every layer grew on the way
