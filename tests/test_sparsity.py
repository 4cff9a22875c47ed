"""Sparsity for energy (admm/sparsity.py): the L1 split W = V and the firing-rate penalty.

Every new block is checked against an independent minimisation of an independently written objective
(``lagr`` of test_updates plus the new terms, written out here): the W-block with the split term
against ``torch.linalg.lstsq`` on a stacked system and against autograd (plain and joint output solves),
the soft threshold against a brute-force grid, the spike block with the rate penalty against an exact
Newton step / projected gradient. Then: the split's ADMM reaches the lasso solution (V exactly sparse,
W → V), the penalties at zero change nothing, settings are validated, and a resumed run with the split
is bitwise the uninterrupted one (V, U and κ live in ``state.aux`` and travel in checkpoints).
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from admm_snn.admm import solver as S
from admm_snn.admm import sparsity as SP
from admm_snn.admm import updates as U
from admm_snn.admm.lagrangian import lagrangian_terms
from admm_snn.admm.settings import ADMMSettings
from admm_snn.errors import SettingsError
from admm_snn.train import CHECKPOINT, train
from test_checkpoint import _problem
from test_updates import (DT, clone_state, reference_targets, grad_norm, gram, lagr, make_settings, newton_minimiser,
                          projected_gradient, random_problem)


pytestmark = pytest.mark.usefixtures("one_thread")


def with_split(state, l, seed, scale=0.3):
    """Random V_l, U_l in the state's aux (as the solver keeps them)."""
    g = torch.Generator().manual_seed(seed)
    W = state.weights[l]
    state.aux[f"l1_v.{l}"] = scale * torch.randn(W.shape, generator=g, dtype=DT)
    state.aux[f"l1_u.{l}"] = scale * torch.randn(W.shape, generator=g, dtype=DT)
    return state.aux[f"l1_v.{l}"], state.aux[f"l1_u.{l}"]


def split_term(W, V, Ud, kappa):
    """(κ/2)‖W − V + U‖², written out."""
    return 0.5 * kappa * ((W - V + Ud) ** 2).sum()


# ----------------------------------------------------------------------------------------------------
# The prox and the V-block
# ----------------------------------------------------------------------------------------------------

def test_soft_threshold_is_the_exact_prox_by_grid():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, generator=g, dtype=DT) * 2, torch.tensor([0.0, 0.3, -0.3, 0.29, -0.31], dtype=DT)])
    grid = torch.linspace(-8, 8, 320001, dtype=DT)  # step 5e-5, contains 0 exactly
    for tau in (0.0, 0.3, 1.7):
        cost = tau * grid.abs().view(-1, 1) + 0.5 * (grid.view(-1, 1) - x.view(1, -1)) ** 2
        ref = grid[cost.argmin(0)]
        got = SP.soft_threshold(x, tau)
        assert torch.allclose(got, ref, atol=6e-5), tau
        # entries inside [-τ, τ] are exactly zero (not just small), the others are not
        assert torch.equal(got == 0, x.abs() <= tau)


def test_v_block_is_the_exact_minimiser_and_u_is_the_scaled_dual_step():
    g = torch.Generator().manual_seed(1)
    W, Ud = torch.randn(5, 7, generator=g, dtype=DT), 0.5 * torch.randn(5, 7, generator=g, dtype=DT)
    lam1, kappa = 0.8, 2.5
    V, U_new = SP.split_step(W, Ud, lam1 / kappa)
    grid = torch.linspace(-6, 6, 240001, dtype=DT).view(-1, 1, 1)
    cost = lam1 * grid.abs() + 0.5 * kappa * (W - grid + Ud) ** 2  # the Lagrangian's terms in V, elementwise
    ref = grid.expand(-1, 5, 7).gather(0, cost.argmin(0, keepdim=True))[0]
    assert torch.allclose(V, ref, atol=6e-5)
    assert bool((V == 0).any()) and bool((V != 0).any())
    assert torch.allclose(U_new, Ud + W - V, atol=0)
    # and the V-block never increases the split's part of the Lagrangian
    V0 = torch.randn(5, 7, generator=g, dtype=DT)
    assert SP.split_value(W, V, Ud, lam1, kappa) <= SP.split_value(W, V0, Ud, lam1, kappa)


# ----------------------------------------------------------------------------------------------------
# The W-block with the split term
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("proximal", [False, True])
@pytest.mark.parametrize("sizes,l,output_solve", [([6, 4, 3], 0, "joint"), ([5, 4, 3, 2], 1, "joint"),
                                                  ([6, 4, 3], 1, "potentials")])
def test_split_weight_update_is_exact_minimiser(sizes, l, output_solve, proximal):
    s = make_settings(l1=0.4, l1_penalty=0.7, l1_output=True, proximal=proximal, output_solve=output_solve)
    state, frames, y = random_problem(11 + l, sizes)
    V, Ud = with_split(state, l, 5 + l)
    L = state.n_layers
    out = l == L - 1
    rho = s.output_rho if out else s.rho
    G = gram(state, frames, l)
    mu = U.ridge_value(G, s.ridge)
    kappa = rho * s.l1_penalty * float(torch.diagonal(G).sum()) / G.shape[0]  # relative, like the ridge
    W0 = state.weights[l].clone() if (proximal and not out) else torch.zeros_like(state.weights[l])

    def objective(wflat):
        W = list(state.weights)
        W[l] = wflat.view_as(state.weights[l])
        return (lagr(W, state.potentials, state.spikes, state.dual, frames, y, s)
                + 0.5 * rho * mu * ((W[l] - W0) ** 2).sum() + split_term(W[l], V, Ud, kappa))

    before = float(objective(state.weights[l].flatten()))
    new = clone_state(state)
    cache = S.SolverCache()
    S.update_weights(new, frames, s, cache, l)
    W_new = new.weights[l]
    assert float(new.aux[f"l1_kappa.{l}"][0]) == pytest.approx(kappa, rel=1e-12)

    # independent: least squares on [a_t ; √μ I ; √(κ/ρ) I] Wᵀ = [x_t (+λ/ρ_L at T) ; √μ W₀ᵀ ; √(κ/ρ) (V − U)ᵀ]
    x = reference_targets(state, s, l, rho)
    a_in = state.layer_inputs(frames, l)
    n_in = a_in.shape[-1]
    eye = torch.eye(n_in, dtype=DT)
    A_st = torch.cat([a_in.reshape(-1, n_in), math.sqrt(mu) * eye, math.sqrt(kappa / rho) * eye])
    B_st = torch.cat([x.reshape(-1, x.shape[-1]), math.sqrt(mu) * W0.T, math.sqrt(kappa / rho) * (V - Ud).T])
    W_ref = torch.linalg.lstsq(A_st, B_st, driver="gelsd").solution.T
    assert torch.allclose(W_new, W_ref, atol=1e-9, rtol=1e-8)
    assert grad_norm(objective, W_new.flatten()) < 1e-8
    assert float(objective(W_new.flatten())) <= before + 1e-10
    # the split term matters (the plain update differs)
    plain = clone_state(state)
    plain.aux.clear()
    S.update_weights(plain, frames, s, S.SolverCache(), l)
    assert not torch.allclose(plain.weights[l], W_new, atol=1e-6)
    if l == 0:  # the input layer's factor of G + (μ + k)I is kept and reused: same result
        again = clone_state(state)
        again.aux[f"l1_kappa.{l}"] = new.aux[f"l1_kappa.{l}"]
        S.update_weights(again, frames, s, cache, l)
        assert ("l1_factor", 0) in cache.extra
        assert torch.allclose(again.weights[l], W_new, atol=1e-12)


@pytest.mark.parametrize("sizes,l", [([6, 4, 3], 0), ([5, 4, 3, 2], 1)])
def test_split_weight_update_uses_the_layers_own_rho(sizes, l):
    """With per-layer penalties (residual balancing, continuation), the split's frozen κ_l weighs
    against ρ_l, the layer's current penalty: the block solves with κ_l / ρ_l, not κ_l / settings.rho."""
    from admm_snn.admm import penalties as P
    s = make_settings(l1=0.4, l1_penalty=0.7, proximal=False)
    state, frames, y = random_problem(21 + l, sizes)
    V, Ud = with_split(state, l, 9 + l)
    P.ensure(state, s)
    cache = S.SolverCache()
    S.update_weights(state, frames, s, cache, l)  # freezes κ_l at ρ_l = settings.rho
    kappa = float(state.aux[f"l1_kappa.{l}"][0])
    state.aux[P.RHO][l] = 2.5 * s.rho  # the layer's penalty moves afterwards
    S.update_weights(state, frames, s, cache, l)
    G = gram(state, frames, l)
    mu = U.ridge_value(G, s.ridge)
    x = reference_targets(state, s, l, s.rho)
    a_in = state.layer_inputs(frames, l)
    n_in = a_in.shape[-1]
    eye = torch.eye(n_in, dtype=DT)
    k = kappa / (2.5 * s.rho)
    A_st = torch.cat([a_in.reshape(-1, n_in), math.sqrt(mu) * eye, math.sqrt(k) * eye])
    B_st = torch.cat([x.reshape(-1, x.shape[-1]), torch.zeros(n_in, x.shape[-1], dtype=DT), math.sqrt(k) * (V - Ud).T])
    W_ref = torch.linalg.lstsq(A_st, B_st, driver="gelsd").solution.T
    assert torch.allclose(state.weights[l], W_ref, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("sizes", [[6, 4, 3], [5, 4, 3, 2]])
def test_joint_output_block_with_split_is_exact_joint_minimiser(sizes):
    s = make_settings(output_solve="joint", l1=0.2, l1_penalty=1.3, l1_output=True)
    state, frames, y = random_problem(4, sizes)
    V, Ud = with_split(state, len(sizes) - 2, 9)
    T = frames.shape[0]
    a = state.spikes[-1]
    Sleak = sum(s.delta ** (T - 1 - t) * a[t] for t in range(T))
    GS = Sleak.T @ Sleak
    _, mu = U.joint_output_ridge(GS, s.ridge, s.delta, s.output_rho, T)
    K = sum(s.delta ** (2 * j) for j in range(T))
    rho = s.output_rho
    kappa = 2 * rho * s.l1_penalty * float(torch.diagonal(GS).sum()) / GS.shape[0] / (rho + 2 * K)
    nW = state.weights[-1].numel()

    def objective(p):
        W, Z = list(state.weights), list(state.potentials)
        W[-1] = p[:nW].view_as(state.weights[-1])
        Z[-1] = p[nW:].view_as(state.potentials[-1])
        return (lagr(W, Z, state.spikes, state.dual, frames, y, s) + 0.5 * rho * mu * (p[:nW] ** 2).sum()
                + split_term(W[-1], V, Ud, kappa))

    p0 = torch.cat([state.weights[-1].flatten(), state.potentials[-1].flatten()])
    p_ref, _, _ = newton_minimiser(objective, p0)
    new = clone_state(state)
    S.update_output_joint_weights(new, frames, y, s)
    S.update_output(new, frames, y, s, S.SolverCache())
    assert float(new.aux[f"l1_kappa.{len(sizes) - 2}"][0]) == pytest.approx(kappa, rel=1e-12)
    p_new = torch.cat([new.weights[-1].flatten(), new.potentials[-1].flatten()])
    assert torch.allclose(p_new, p_ref, atol=1e-8, rtol=1e-7)
    assert float(objective(p_new)) <= float(objective(p0)) + 1e-10


def test_split_block_after_a_weight_step_is_exact_minimiser():
    """With a step rule the hidden split enters after the step: W = argmin (ρμ'/2)‖W − W_step‖²
    + (κ/2)‖W − V + U‖², μ' = ridge·s, κ = ρ·l1_penalty·s (any scale s: only the ratio matters)."""
    s = ADMMSettings(l1=0.05, l1_penalty=3.0, ridge=10.0, rho=1.7, dtype="float64")
    assert s.steps_hidden_weights
    state, frames, y = random_problem(60, [6, 4, 3])
    V, Ud = with_split(state, 0, 61)
    W_step = state.weights[0].clone()
    assert not SP.in_block(state, s, 0) and SP.in_block(state, s.replace(step_rule="fixed", weight_step=1.0, momentum=0.0), 0)
    SP.split_after_step(state, s)
    scale = 0.37
    mu, kappa = s.ridge * scale, s.rho * s.l1_penalty * scale

    def f(w):
        return 0.5 * s.rho * mu * ((w - W_step) ** 2).sum() + split_term(w, V, Ud, kappa)

    w_ref, _, _ = newton_minimiser(lambda p: f(p.view_as(W_step)), W_step.flatten())
    assert torch.allclose(state.weights[0].flatten(), w_ref, atol=1e-12)
    assert not torch.allclose(state.weights[0], W_step)


# ----------------------------------------------------------------------------------------------------
# The spike block with the rate penalty
# ----------------------------------------------------------------------------------------------------

def rate_spike_objective(state, frames, y, s, l, gamma):
    def f(p):
        A = list(state.spikes)
        A[l] = p.view_as(state.spikes[l])
        return lagr(state.weights, state.potentials, A, state.dual, frames, y, s) + gamma * A[l].sum()
    return f


@pytest.mark.parametrize("solver", ["free", "clip", "box"])
@pytest.mark.parametrize("sizes,l", [([6, 4, 3], 0), ([5, 3, 4, 3], 0), ([5, 3, 4, 3], 1)])
def test_spike_block_with_rate_penalty_is_exact(sizes, l, solver):
    gamma = 0.35
    s = make_settings(spike_solver=solver, rate_penalty=gamma, box_iterations=400)
    state, frames, y = random_problem(40 + l, sizes)
    f = rate_spike_objective(state, frames, y, s, l, gamma)
    a_star, H, g0 = newton_minimiser(f, state.spikes[l].flatten())
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, l)
    got = new.spikes[l].flatten()
    if solver == "free":
        assert torch.allclose(got, a_star, atol=1e-9)
        assert grad_norm(f, got) < 1e-8
    elif solver == "clip":
        assert torch.allclose(got, a_star.clamp(0, 1), atol=1e-10)
    else:
        p_ref = projected_gradient(H, g0)
        assert torch.allclose(got, p_ref, atol=1e-5)
        assert float(f(got)) <= float(f(p_ref)) + 1e-9
    # the penalty moves the solution: without it the block minimiser is another point
    plain = clone_state(state)
    S.update_spikes_all_t(plain, frames, s.replace(rate_penalty=0.0), l)
    assert float(plain.spikes[l].sum()) > float(new.spikes[l].sum()) + 1e-3


# ----------------------------------------------------------------------------------------------------
# The Lagrangian with the new terms, and monotone block descent
# ----------------------------------------------------------------------------------------------------

def test_lagrangian_terms_include_rate_and_split():
    s = make_settings(l1=0.3, l1_penalty=0.6, l1_output=True)
    state, frames, y = random_problem(2, [5, 4, 3, 2])
    kappas = [0.7, 1.9, 0.4]
    for l, k in enumerate(kappas):
        with_split(state, l, 20 + l)
        state.aux[f"l1_kappa.{l}"] = torch.tensor([k], dtype=torch.float64)
    gamma = 0.25
    terms = lagrangian_terms(state, frames, y, s.rho, s.beta, s.lif, s.output_rho, rate_penalty=gamma,
                             l1=s.l1, l1_penalty=s.l1_penalty)
    ref = float(lagr(state.weights, state.potentials, state.spikes, state.dual, frames, y, s))
    ref += gamma * sum(float(a.sum()) for a in state.spikes)
    for l, k in enumerate(kappas):
        W, V, Ud = state.weights[l], state.aux[f"l1_v.{l}"], state.aux[f"l1_u.{l}"]
        lam1 = k * s.l1 / s.l1_penalty
        ref += float(lam1 * V.abs().sum() + split_term(W, V, Ud, k) - 0.5 * k * (Ud ** 2).sum())
    assert terms["lagrangian"] == pytest.approx(ref, rel=1e-12)
    assert terms["rate"] == pytest.approx(gamma * sum(float(a.sum()) for a in state.spikes), rel=1e-12)
    # without the new arguments: the plain Lagrangian (the split's aux is ignored when l1 = 0)
    plain = lagrangian_terms(state, frames, y, s.rho, s.beta, s.lif, s.output_rho)
    assert plain["lagrangian"] == pytest.approx(float(lagr(state.weights, state.potentials, state.spikes,
                                                           state.dual, frames, y, s)), rel=1e-12)


def _exact_settings(**kw):
    base = dict(schedule="parallel", output_solve="potentials", reproject=0, weight_step=1.0, momentum=0.0, step_rule="fixed",
                proximal=False, spike_solver="box", box_iterations=300, dual=False, warmup=100, iterations=4,
                ridge=0.0, ridge_out=0.0, eps=1e-9, rho=1.3, rho_out=2.1, beta=0.7, delta=0.9, theta=1.0,
                dtype="float64", gram_dtype="float64", init="uniform", grow_every=0,
                output_loss="square", target_gate=0.0, rho_decay=1.0)  # the spec's one-hot loss; the hinge output is tested in test_hinge.py
    base.update(kw)
    return ADMMSettings(**base)


def _tiny(seed=3, sizes=(6, 4, 3, 3), T=5, N=6):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, N, sizes[0], generator=g) < 0.5).to(DT)
    y = torch.nn.functional.one_hot(torch.arange(N) % sizes[-1], sizes[-1]).to(DT)
    return frames, y, list(sizes)


def _objective(state, frames, y, s):
    """The extended Lagrangian plus the weights' ridge floor that the weight blocks minimise."""
    value = lagrangian_terms(state, frames, y, s.rho, s.beta, s.lif, s.output_rho, rate_penalty=s.rate_penalty,
                             l1=s.l1, l1_penalty=s.l1_penalty)["lagrangian"]
    L = state.n_layers
    for l in range(L):
        a = state.layer_inputs(frames, l).reshape(-1, state.weights[l].shape[1])
        mu = U.ridge_value(a.T @ a, 0.0)
        value += 0.5 * (s.output_rho if l == L - 1 else s.rho) * mu * float((state.weights[l] ** 2).sum())
    return value


@pytest.mark.parametrize("schedule,output_solve", [("parallel", "potentials"), ("sequential", "sweep")])
def test_iterations_with_rate_penalty_never_increase_the_lagrangian(monkeypatch, schedule, output_solve):
    """Exact blocks (box spikes, plain weights, no dual step): block coordinate descent on the Lagrangian
    with γ Σ a is monotone, block by block and over iterations (the sequential schedule's per-t spike and
    potential steps run inline, so only whole iterations are checked there); and the rate penalty lowers
    the relaxed spikes."""
    s = _exact_settings(rate_penalty=0.2, schedule=schedule, output_solve=output_solve)
    frames, y, sizes = _tiny()
    g = torch.Generator().manual_seed(5)
    state = S.init_state(frames, y, sizes, s, g, S.SolverCache())
    state.dual = 0.2 * torch.randn(state.dual.shape, generator=g, dtype=DT)
    plain = clone_state(state)
    trace = []
    for name in ("update_weights", "update_spikes_all_t", "update_potentials_red_black", "update_output"):
        orig = getattr(S, name)

        def wrapped(st_, *args, _orig=orig, _name=name, **kw):
            before = _objective(st_, frames, y, s)
            res = _orig(st_, *args, **kw)
            trace.append((_name, before, _objective(st_, frames, y, s)))
            return res
        monkeypatch.setattr(S, name, wrapped)
    cache = S.SolverCache()
    values = [_objective(state, frames, y, s)]
    for _ in range(s.iterations):
        S.iterate(state, frames, y, s, cache, g)
        values.append(_objective(state, frames, y, s))
    tol = 1e-9 * max(1.0, abs(values[0]))
    assert len(trace) >= 4 * (5 if schedule == "parallel" else 3)
    assert not [t for t in trace if t[2] > t[1] + tol], [t for t in trace if t[2] > t[1] + tol][:3]
    assert all(v1 <= v0 + tol for v0, v1 in zip(values, values[1:])), values
    assert values[-1] < values[0]
    monkeypatch.undo()
    g2 = torch.Generator().manual_seed(6)
    for _ in range(s.iterations):
        S.iterate(plain, frames, y, s.replace(rate_penalty=0.0), S.SolverCache(), g2)
    assert sum(float(a.sum()) for a in state.spikes) < sum(float(a.sum()) for a in plain.spikes)


def test_split_weight_and_v_blocks_never_increase_the_augmented_lagrangian():
    s = _exact_settings(l1=0.05, l1_penalty=0.5, l1_output=True)
    frames, y, sizes = _tiny(7)
    g = torch.Generator().manual_seed(8)
    state = S.init_state(frames, y, sizes, s.replace(init="forward", init_gain=3.0), g, S.SolverCache())
    SP.start_splits(state, s)
    cache = S.SolverCache()
    for l in range(state.n_layers):
        S.update_weights(state, frames, s, cache, l)  # sets κ_l
    for _ in range(3):
        for l in range(state.n_layers):
            before = _objective(state, frames, y, s)
            S.update_weights(state, frames, s, cache, l)
            assert _objective(state, frames, y, s) <= before + 1e-9 * abs(before)
        # the V-block alone (U fixed) is an exact block minimiser too
        before = _objective(state, frames, y, s)
        for l in range(state.n_layers):
            Ud = state.aux[f"l1_u.{l}"]
            state.aux[f"l1_v.{l}"] = SP.soft_threshold(state.weights[l] + Ud, SP.threshold(s))
        assert _objective(state, frames, y, s) <= before + 1e-9 * abs(before)
        SP.update_splits(state, s)


# ----------------------------------------------------------------------------------------------------
# The split's ADMM solves the lasso: V exactly sparse, W → V
# ----------------------------------------------------------------------------------------------------

def test_split_admm_reaches_the_lasso_solution_with_fixed_states():
    """With the states fixed, repeating (W-block, V-block, dual step) is plain ADMM for
    min (ρ/2)Σ‖x − W a‖² + (ρμ/2)‖W‖² + λ1‖W‖₁: V must reach the lasso solution (computed here
    independently by FISTA), exactly sparse, and W − V → 0."""
    s = make_settings(l1=0.08, l1_penalty=0.5, ridge=0.05)
    state, frames, y = random_problem(50, [8, 5, 3], T=6, N=6)
    l = 0
    SP.start_splits(state, s)
    cache = S.SolverCache()
    gaps = []
    for _ in range(300):
        S.update_weights(state, frames, s, cache, l)
        SP.update_splits(state, s)
        gaps.append(float((state.weights[l] - state.aux["l1_v.0"]).norm()))
    V = state.aux["l1_v.0"]
    kappa = float(state.aux["l1_kappa.0"][0])
    lam1 = kappa * s.l1 / s.l1_penalty
    # independent lasso solution by FISTA on the same objective
    a = frames.reshape(-1, frames.shape[-1])
    z = state.potentials[l]
    x = z.clone()
    x[1:] += -s.delta * z[:-1] + s.theta * state.spikes[l][:-1]
    x = x.reshape(-1, x.shape[-1])
    G = a.T @ a
    mu = U.ridge_value(G, s.ridge)
    H = s.rho * (G + mu * torch.eye(G.shape[0], dtype=DT))
    step = 1.0 / float(torch.linalg.eigvalsh(H)[-1])
    Wk = torch.zeros_like(V)
    Yk, tk = Wk.clone(), 1.0
    for _ in range(20000):
        grad = Yk @ H - s.rho * (x.T @ a)
        Wn = SP.soft_threshold(Yk - step * grad, step * lam1)
        tn = 0.5 * (1 + math.sqrt(1 + 4 * tk * tk))
        Yk, Wk, tk = Wn + ((tk - 1) / tn) * (Wn - Wk), Wn, tn
    assert bool((Wk == 0).any()) and bool((Wk != 0).any()), "the case must be partly sparse"
    assert torch.allclose(V, Wk, atol=1e-6)
    assert torch.equal(V == 0, Wk == 0)
    assert gaps[-1] < 1e-6 and gaps[-1] < 1e-3 * gaps[0]


def test_default_solver_with_l1_gives_an_exactly_sparse_copy_close_to_w():
    """The default schedule (relative weight step, re-projection) with the split on a tiny problem: V has
    exact zeros, and the distance between W and V falls over the iterations."""
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(6, 48, 20, generator=g) < 0.3).float()
    labels = torch.arange(48) % 3
    s = ADMMSettings(iterations=12, l1=0.02, l1_penalty=1.0, seed=1)
    y = torch.nn.functional.one_hot(labels, 3).float()
    gen = torch.Generator().manual_seed(s.seed)
    cache = S.SolverCache()
    state = S.init_state(frames, y, [20, 8, 3], s, gen, cache)
    gaps = []
    for _ in range(s.iterations):
        S.iterate(state, frames, y, s, cache, gen)
        gaps.append(float((state.weights[0] - state.aux["l1_v.0"]).norm() / state.weights[0].norm()))
    V = state.aux["l1_v.0"]
    assert 0.0 < SP.density([V])[0] < 1.0
    assert SP.density(SP.sparse_weights(state))[0] == SP.density([V])[0]
    assert gaps[-1] < gaps[0], gaps


# ----------------------------------------------------------------------------------------------------
# Off by default: zero penalties change nothing
# ----------------------------------------------------------------------------------------------------

def test_zero_penalties_reproduce_the_default_run_bitwise(monkeypatch):
    """l1 = 0 and rate_penalty = 0 (whatever l1_penalty and l1_output) give bitwise the default run, which
    is bitwise the run with every sparsity hook removed."""
    X, lab, val = _problem()
    base = ADMMSettings(iterations=3, seed=2)
    ref = train(X, lab, [8], base, val=val, progress=False)
    off = train(X, lab, [8], base.replace(l1=0.0, l1_penalty=7.0, l1_output=True, rate_penalty=0.0), val=val,
                progress=False)
    monkeypatch.setattr(S.SP, "start_splits", lambda *a: None)
    monkeypatch.setattr(S.SP, "update_splits", lambda *a: None)
    monkeypatch.setattr(S.SP, "rate_rhs", lambda rhs, g: rhs)
    monkeypatch.setattr(S.SP, "active", lambda *a: False)
    bare = train(X, lab, [8], base, val=val, progress=False)
    for r in (off, bare):
        assert all(torch.equal(a, b) for a, b in zip(ref.final_weights, r.final_weights))
        assert [h["lagrangian"] for h in ref.history] == [h["lagrangian"] for h in r.history]
    # the sparsity hooks add no variable of their own (the aux holds the weight step's momentum only)
    assert off.state.aux.keys() == ref.state.aux.keys() == {"momentum_0"}
    # and switched on, they do change the run
    monkeypatch.undo()
    on = train(X, lab, [8], base.replace(l1=0.01, rate_penalty=0.05), val=val, progress=False)
    assert not torch.equal(on.final_weights[0], ref.final_weights[0])


# ----------------------------------------------------------------------------------------------------
# Settings and command line
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,name", [
    (dict(l1=-0.1), "l1"), (dict(l1=float("inf")), "l1"), (dict(l1=float("nan")), "l1"),
    (dict(l1_penalty=0.0), "l1_penalty"), (dict(l1_penalty=-1.0), "l1_penalty"),
    (dict(l1_penalty=float("nan")), "l1_penalty"), (dict(rate_penalty=-1e-3), "rate_penalty"),
    (dict(rate_penalty=float("inf")), "rate_penalty"), (dict(l1_output=1), "l1_output"),
])
def test_settings_are_validated_with_one_line(change, name):
    with pytest.raises(SettingsError) as e:
        ADMMSettings(**change)
    msg = str(e.value)
    assert msg.startswith(f"{name}=") and "\n" not in msg


def test_defaults_are_off_and_flags_map_to_settings():
    d = ADMMSettings()
    assert d.l1 == 0.0 and d.rate_penalty == 0.0 and d.l1_output is False and d.l1_penalty > 0
    # the sequential schedule supports both (its weight updates go through update_weights, its per-t
    # spike solves shift their right-hand side like the parallel one)
    ADMMSettings(schedule="sequential", l1=0.1, rate_penalty=0.1)
    from admm_snn.cli import admm_settings, build_parser
    args = build_parser().parse_args(["train", "--l1", "0.02", "--l1-penalty", "3", "--l1-output",
                                      "--rate-penalty", "0.1"])
    s = admm_settings(args)
    assert (s.l1, s.l1_penalty, s.l1_output, s.rate_penalty) == (0.02, 3.0, True, 0.1)


# ----------------------------------------------------------------------------------------------------
# Checkpoints: V, U and κ are part of the state
# ----------------------------------------------------------------------------------------------------

@pytest.mark.determinism
@pytest.mark.parametrize("schedule,init", [("parallel", "forward"), ("sequential", "uniform")])
def test_resume_with_l1_is_bitwise(tmp_path, schedule, init):
    X, lab, val = _problem()
    # the uniform start without re-projection (the paper's): re-projected, its hidden layer never fires,
    # the output weights and V_L stay exactly 0, and V_1's few zeros came from rounding; here both
    # layers' V are partly sparse (τ = 0.01 lies inside the weights' range)
    uniform = dict(reproject=0, l1=0.02) if init == "uniform" else {}
    s = ADMMSettings(iterations=5, warmup=2, schedule=schedule, init=init, seed=5, l1=0.01, l1_penalty=2.0,
                     l1_output=True, rate_penalty=0.05 if schedule == "parallel" else 0.0).replace(**uniform)
    a = train(X, lab, [8], s, val=val, out=tmp_path / "a", checkpoint_every=1, progress=False)
    train(X, lab, [8], s.replace(iterations=2), val=val, out=tmp_path / "b", checkpoint_every=1, progress=False)
    b = train(X, lab, [8], s, val=val, out=tmp_path / "b", checkpoint_every=1, resume=True, progress=False)
    assert sorted(a.state.aux) == ["l1_kappa.0", "l1_kappa.1", "l1_u.0", "l1_u.1", "l1_v.0", "l1_v.1", "momentum_0"]
    for wa, wb in zip(a.final_weights + a.weights, b.final_weights + b.weights):
        assert torch.equal(wa, wb)
    for k in a.state.aux:
        assert torch.equal(a.state.aux[k], b.state.aux[k]), k
    ca, cb = load_file(str(tmp_path / "a" / CHECKPOINT)), load_file(str(tmp_path / "b" / CHECKPOINT))
    assert sorted(k for k in ca if k.startswith("aux.")) == [f"aux.{k}" for k in sorted(a.state.aux)]
    for k in ca:
        if k.startswith("aux."):
            assert torch.equal(ca[k], cb[k]), k
    strip = [{k: v for k, v in m.items() if k not in ("seconds", "wall_s", "report_s")} for m in a.history]
    assert strip == [{k: v for k, v in m.items() if k not in ("seconds", "wall_s", "report_s")} for m in b.history]
    assert a.best_iteration == b.best_iteration
    assert any(0.0 < d < 1.0 for d in SP.density([a.state.aux["l1_v.0"], a.state.aux["l1_v.1"]]))
