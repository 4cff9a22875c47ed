"""Every ADMM block update is the exact minimiser of the augmented Lagrangian over its block.

Each test builds a tiny random problem (float64), runs one library update, and compares it with an
independent minimisation of an independently written Lagrangian (``lagr`` below, plain loops over t):
an exact Newton step with the autograd Hessian for quadratic blocks, ``torch.linalg.lstsq`` on a
stacked system for the weights, brute-force projected gradient for box-constrained spikes, and a fine
grid search for the (non-convex, elementwise) potentials.

Generalisation tested throughout: hidden dynamics penalty ρ = settings.rho, output dynamics penalty and
dual step ρ_L = settings.output_rho (set different from ρ); the weight updates minimise
L + (ρ_l μ/2)‖W_l‖² with μ = updates.ridge_value(G, ridge).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.lagrangian import lagrangian_terms
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import ADMMState

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------
# Problem builders and an independent Lagrangian
# ----------------------------------------------------------------------------------------------------

def make_settings(**kw):
    # the spec's exact blocks: plain ridge (no proximal anchor), no extrapolation, clipped spikes, one ridge,
    # no re-projection, paper-like β; tests of the other options set them explicitly
    base = dict(rho=1.3, rho_out=2.1, beta=0.7, delta=0.9, theta=1.0, eps=1e-5, ridge=1e-2, dtype="float64",
                gram_dtype="float64", box_iterations=400, proximal=False, weight_step=1.0, momentum=0.0, step_rule="fixed", ridge_out=None,
                spike_solver="clip", reproject=0, grow_every=0,
                output_loss="square", target_gate=0.0, rho_decay=1.0)  # the spec's one-hot loss; the hinge output is tested in test_hinge.py
    base.update(kw)
    return ADMMSettings(**base)


def reference_targets(state, s, l, rho_out):
    """x_{l,t} = z_t − δ z_{t-1} (+ θ a_{t-1} hidden), written out independently of the solver; for the
    output layer λ/ρ_L is added at t = T (the λ term of the weight update)."""
    z = state.potentials[l]
    x = z.clone()
    x[1:] -= s.delta * z[:-1]
    if l < state.n_layers - 1:
        x[1:] += s.theta * state.spikes[l][:-1]
    else:
        x[-1] += state.dual / rho_out
    return x


def random_problem(seed, sizes, T=5, N=4, zscale=1.0, dual_scale=0.5):
    """Random weights, potentials, spikes in [0, 1], dual; binary frames; one-hot y."""
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, N, sizes[0], generator=g) < 0.5).to(DT)
    labels = torch.randint(0, sizes[-1], (N,), generator=g)
    y = torch.nn.functional.one_hot(labels, sizes[-1]).to(DT)
    W = [torch.randn(sizes[l], sizes[l - 1], generator=g, dtype=DT) / math.sqrt(sizes[l - 1])
         for l in range(1, len(sizes))]
    Z = [0.5 + zscale * torch.randn(T, N, n, generator=g, dtype=DT) for n in sizes[1:]]
    A = [torch.rand(T, N, n, generator=g, dtype=DT) for n in sizes[1:-1]]
    lam = dual_scale * torch.randn(N, sizes[-1], generator=g, dtype=DT)
    return ADMMState(W, Z, A, lam), frames, y


def consistent_problem(seed, sizes, s, T=5, N=4, noise=0.01, dual_scale=0.02):
    """Relaxed spikes in [0.2, 0.8] and potentials that satisfy the relaxed dynamics up to small noise:
    with a small β the spike minimiser then lies inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, N, sizes[0], generator=g) < 0.5).to(DT)
    labels = torch.randint(0, sizes[-1], (N,), generator=g)
    y = torch.nn.functional.one_hot(labels, sizes[-1]).to(DT)
    W = [torch.randn(sizes[l], sizes[l - 1], generator=g, dtype=DT) / math.sqrt(sizes[l - 1])
         for l in range(1, len(sizes))]
    A = [0.2 + 0.6 * torch.rand(T, N, n, generator=g, dtype=DT) for n in sizes[1:-1]]
    Z = []
    for l in range(len(W)):
        inp = frames if l == 0 else A[l - 1]
        z = torch.zeros(T, N, sizes[l + 1], dtype=DT)
        for t in range(T):
            zp = z[t - 1] if t else 0.0
            z[t] = s.delta * zp + inp[t] @ W[l].T
            if l < len(W) - 1 and t:
                z[t] -= s.theta * A[l][t - 1]
        Z.append(z + noise * torch.randn(z.shape, generator=g, dtype=DT))
    lam = dual_scale * torch.randn(N, sizes[-1], generator=g, dtype=DT)
    return ADMMState(W, Z, A, lam), frames, y


def lagr(W, Z, A, lam, frames, y, s, rhos=None, betas=None):
    """The augmented Lagrangian of spec §2, with ρ for hidden and ρ_L for the output dynamics, written
    independently of the library (explicit loop over t; differentiable in W, Z, A). ``rhos``/``betas``:
    one ρ_l / β_l per hidden layer instead of s.rho / s.beta (adaptive penalties)."""
    rho_L, d, th = s.output_rho, s.delta, s.theta
    L, T = len(W), frames.shape[0]
    rhos = rhos if rhos is not None else [s.rho] * (L - 1)
    betas = betas if betas is not None else [s.beta] * (L - 1)
    total = ((Z[-1][T - 1] - y) ** 2).sum()
    for l in range(L):
        inp = frames if l == 0 else A[l - 1]
        hidden = l < L - 1
        r = rhos[l] if hidden else rho_L
        for t in range(T):
            res = Z[l][t] - inp[t] @ W[l].T
            if t > 0:
                res = res - d * Z[l][t - 1]
                if hidden:
                    res = res + th * A[l][t - 1]
            total = total + 0.5 * r * (res ** 2).sum()
            if hidden:
                total = total + 0.5 * betas[l] * ((A[l][t] - (Z[l][t] > th).to(DT)) ** 2).sum()
            elif t == T - 1:
                total = total + (lam * res).sum()
    return total


def lagr_state(state, frames, y, s):
    return float(lagr(state.weights, state.potentials, state.spikes, state.dual, frames, y, s))


def gram(state, frames, l):
    a = state.layer_inputs(frames, l).reshape(-1, state.weights[l].shape[1])
    return a.T @ a


def ridge_terms(state, frames, s):
    """Σ_l (ρ_l μ_l / 2) ‖W_l‖², μ_l = ridge_value(G_l, ridge) at the current layer inputs."""
    out = 0.0
    for l in range(state.n_layers):
        r = s.output_rho if l == state.n_layers - 1 else s.rho
        out += 0.5 * r * U.ridge_value(gram(state, frames, l), s.ridge) * float((state.weights[l] ** 2).sum())
    return out


def newton_minimiser(f, p0):
    """Exact minimiser of a strictly convex quadratic f (flat parameter vector) by one Newton step
    with the autograd gradient and Hessian. Returns (p*, H, g0) with g0 = ∇f(0)."""
    p0 = p0.detach().clone()
    H = torch.autograd.functional.hessian(f, p0)
    z = torch.zeros_like(p0, requires_grad=True)
    g0 = torch.autograd.grad(f(z), z)[0]
    assert float(torch.linalg.eigvalsh(H)[0]) > 0, "block objective is not strictly convex"
    return torch.linalg.solve(H, -g0), H, g0


def grad_norm(f, p):
    p = p.detach().clone().requires_grad_(True)
    return float(torch.autograd.grad(f(p), p)[0].abs().max())


def clone_state(state):
    return copy.deepcopy(state)


# ----------------------------------------------------------------------------------------------------
# The Lagrangian itself
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[6, 4, 3], [5, 4, 3, 2]])
def test_lagrangian_terms_matches_independent_lagrangian(sizes):
    s = make_settings()
    state, frames, y = random_problem(0, sizes)
    terms = lagrangian_terms(state, frames, y, s.rho, s.beta, s.lif, s.output_rho)
    assert terms["lagrangian"] == pytest.approx(lagr_state(state, frames, y, s), rel=1e-12)
    assert len(terms["dynamics"]) == len(sizes) - 1 and len(terms["spike"]) == len(sizes) - 2
    # rho_out=None means ρ_L = ρ
    s1 = make_settings(rho_out=None)
    t1 = lagrangian_terms(state, frames, y, s1.rho, s1.beta, s1.lif)
    assert t1["lagrangian"] == pytest.approx(lagr_state(state, frames, y, s1), rel=1e-12)


# ----------------------------------------------------------------------------------------------------
# 1. Weights
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("sizes,l", [([6, 4, 3], 0), ([6, 4, 3], 1),
                                     ([5, 4, 3, 2], 0), ([5, 4, 3, 2], 1), ([5, 4, 3, 2], 2)])
def test_weight_update_is_exact_minimiser(sizes, l, chunk):
    s = make_settings(chunk_size=chunk)
    state, frames, y = random_problem(1 + l, sizes)
    L = state.n_layers
    out = l == L - 1
    rho_l = s.output_rho if out else s.rho
    a_in = state.layer_inputs(frames, l)
    mu = U.ridge_value(gram(state, frames, l), s.ridge)

    def objective(wflat):
        W = list(state.weights)
        W[l] = wflat.view_as(state.weights[l])
        return lagr(W, state.potentials, state.spikes, state.dual, frames, y, s) \
            + 0.5 * rho_l * mu * (wflat ** 2).sum()

    before = float(objective(state.weights[l].flatten()))
    new = clone_state(state)
    S.update_weights(new, frames, s, S.SolverCache(), l)
    W_new = new.weights[l]

    # independent reference: least squares on the stacked system [a_t ; sqrt(μ) I] Wᵀ = [x_t (+λ/ρ_L at T) ; 0]
    x = reference_targets(state, s, l, rho_l)
    n_in = a_in.shape[-1]
    A_st = torch.cat([a_in.reshape(-1, n_in), math.sqrt(mu) * torch.eye(n_in, dtype=DT)])
    B_st = torch.cat([x.reshape(-1, x.shape[-1]), torch.zeros(n_in, x.shape[-1], dtype=DT)])
    W_ref = torch.linalg.lstsq(A_st, B_st, driver="gelsd").solution.T
    assert torch.allclose(W_new, W_ref, atol=1e-9, rtol=1e-8)
    assert grad_norm(objective, W_new.flatten()) < 1e-8
    assert float(objective(W_new.flatten())) <= before + 1e-10
    # nothing else moved
    for l2 in range(L):
        if l2 != l:
            assert torch.equal(new.weights[l2], state.weights[l2])


def test_input_gram_factor_is_cached_and_reused():
    s = make_settings()
    state, frames, y = random_problem(3, [6, 4, 3])
    cache = S.SolverCache()
    S.update_weights(state, frames, s, cache, 0)
    assert cache.input_gram_factor is not None
    W1 = state.weights[0].clone()
    state.potentials[0] += 0.3
    fresh = clone_state(state)
    S.update_weights(state, frames, s, cache, 0)
    S.update_weights(fresh, frames, s, S.SolverCache(), 0)
    assert torch.allclose(state.weights[0], fresh.weights[0], atol=1e-12)
    assert not torch.allclose(state.weights[0], W1)


# ----------------------------------------------------------------------------------------------------
# 2. Output block
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[6, 4, 3], [5, 4, 3, 2]])
@pytest.mark.parametrize("chunk", [None, 3])
def test_joint_output_block_is_exact_joint_minimiser(sizes, chunk):
    s = make_settings(output_solve="joint", chunk_size=chunk)
    state, frames, y = random_problem(4, sizes)
    T = frames.shape[0]
    a = state.spikes[-1]
    Sleak = sum(s.delta ** (T - 1 - t) * a[t] for t in range(T))  # Σ_t δ^{T−t} a_t, computed here
    _, mu = U.joint_output_ridge(Sleak.T @ Sleak, s.ridge, s.delta, s.output_rho, T)
    nW = state.weights[-1].numel()

    def objective(p):
        W = list(state.weights)
        Z = list(state.potentials)
        W[-1] = p[:nW].view_as(state.weights[-1])
        Z[-1] = p[nW:].view_as(state.potentials[-1])
        return lagr(W, Z, state.spikes, state.dual, frames, y, s) + 0.5 * s.output_rho * mu * (p[:nW] ** 2).sum()

    p0 = torch.cat([state.weights[-1].flatten(), state.potentials[-1].flatten()])
    p_ref, _, _ = newton_minimiser(objective, p0)
    new = clone_state(state)
    S.update_output_joint_weights(new, frames, y, s)
    S.update_output(new, frames, y, s, S.SolverCache())
    p_new = torch.cat([new.weights[-1].flatten(), new.potentials[-1].flatten()])
    assert torch.allclose(p_new, p_ref, atol=1e-8, rtol=1e-7)
    assert float(objective(p_new)) <= float(objective(p0)) + 1e-10
    assert float(objective(p_new)) <= float(objective(p_ref)) + 1e-9


@pytest.mark.parametrize("sizes", [[6, 4, 3], [5, 4, 3, 2]])
def test_output_potentials_solve_is_exact_minimiser_over_all_z(sizes):
    s = make_settings(output_solve="potentials")
    state, frames, y = random_problem(5, sizes)

    def objective(p):
        Z = list(state.potentials)
        Z[-1] = p.view_as(state.potentials[-1])
        return lagr(state.weights, Z, state.spikes, state.dual, frames, y, s)

    p_ref, _, _ = newton_minimiser(objective, state.potentials[-1].flatten())
    new = clone_state(state)
    S.update_output(new, frames, y, s, S.SolverCache())
    assert torch.allclose(new.potentials[-1].flatten(), p_ref, atol=1e-9, rtol=1e-8)
    assert torch.equal(new.weights[-1], state.weights[-1])
    # the pure function, too
    u = state.spikes[-1] @ state.weights[-1].T
    z = U.solve_output_potentials(u, y, state.dual, s.delta, s.output_rho)
    assert torch.allclose(z.flatten(), p_ref, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("T", [2, 5])
@pytest.mark.parametrize("ts", ["first", "T-2", "T-1", "T", "even", "odd"])
def test_output_sweep_formula_is_exact_minimiser_at_t(ts, T):
    """update_output_potentials_at at the given (0-based, non-neighbouring) indices equals the minimiser
    over those z_{L,t} alone: t < T−1, t = T−1 (the λ branch) and t = T (spec's 1-based names)."""
    s = make_settings(output_solve="sweep")
    state, frames, y = random_problem(6 + T, [6, 4, 3], T=T)
    idx = {"first": [0], "T-2": [T - 3] if T >= 3 else [0], "T-1": [T - 2], "T": [T - 1],
           "even": list(range(0, T, 2)), "odd": list(range(1, T, 2))}[ts]
    idx_t = torch.tensor(idx)
    z0 = state.potentials[-1]

    def objective(p):
        Z = list(state.potentials)
        z = z0.clone()
        z[idx_t] = p.view(len(idx), *z0.shape[1:])
        Z[-1] = z
        return lagr(state.weights, Z, state.spikes, state.dual, frames, y, s)

    p_ref, _, _ = newton_minimiser(objective, z0[idx_t].flatten())
    u = state.spikes[-1] @ state.weights[-1].T
    got = U.update_output_potentials_at(z0, u, y, state.dual, idx_t, s.delta, s.output_rho)
    # the λ branch is also checked to float64 precision by the test below
    assert torch.allclose(got.flatten(), p_ref, atol=1e-7, rtol=1e-7)
    assert grad_norm(objective, got.flatten()) < 1e-6


def test_output_sweep_lambda_branch_is_float64_exact():
    s = make_settings(output_solve="sweep")
    state, frames, y = random_problem(8, [6, 4, 3], T=2)
    u = state.spikes[-1] @ state.weights[-1].T
    z0, lam = state.potentials[-1], state.dual
    got = U.update_output_potentials_at(z0, u, y, lam, torch.tensor([0]), s.delta, s.output_rho)[0]
    s_ = u[0]                      # δ z_{L,0} + u_1 with z_{L,0} = 0
    r = z0[1] - u[1]
    expected = (s_ + s.delta * r + s.delta * lam / s.output_rho) / (1 + s.delta ** 2)
    assert torch.allclose(got, expected, atol=1e-13, rtol=0)


@pytest.mark.parametrize("schedule_fn", ["sweep", "sequential_output"])
def test_output_sweeps_do_not_increase_lagrangian(schedule_fn):
    s = make_settings(output_solve="sweep", schedule="sequential")
    state, frames, y = random_problem(8, [6, 4, 3])
    before = lagr_state(state, frames, y, s) + ridge_terms(state, frames, s)
    if schedule_fn == "sweep":
        S.update_output(state, frames, y, s, S.SolverCache())
    else:
        S.sequential_output(state, frames, y, s, S.SolverCache(), torch.Generator().manual_seed(0))
    assert lagr_state(state, frames, y, s) + ridge_terms(state, frames, s) <= before + 1e-10


# ----------------------------------------------------------------------------------------------------
# 3. Spikes
# ----------------------------------------------------------------------------------------------------

def spike_objective(state, frames, y, s, l):
    def objective(p):
        A = list(state.spikes)
        A[l] = p.view_as(state.spikes[l])
        return lagr(state.weights, state.potentials, A, state.dual, frames, y, s)
    return objective


SPIKE_CASES = [([6, 4, 3], 0), ([5, 3, 4, 3], 0), ([5, 3, 4, 3], 1)]


@pytest.mark.parametrize("sizes,l", SPIKE_CASES)
def test_clip_spike_update_is_clipped_unconstrained_minimiser(sizes, l):
    """'clip' = the exact unconstrained minimiser over all a_{l,t}, clipped elementwise to [0, 1]."""
    s = make_settings(spike_solver="clip")
    state, frames, y = random_problem(10 + l, sizes)
    f = spike_objective(state, frames, y, s, l)
    a_star, _, _ = newton_minimiser(f, state.spikes[l].flatten())
    assert bool(((a_star < 0) | (a_star > 1)).any())  # the clip matters in this case
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, l)
    assert torch.allclose(new.spikes[l].flatten(), a_star.clamp(0, 1), atol=1e-10)
    for l2 in range(len(state.spikes)):
        if l2 != l:
            assert torch.equal(new.spikes[l2], state.spikes[l2])


@pytest.mark.parametrize("solver", ["free", "clip"])
@pytest.mark.parametrize("sizes,l", [([6, 9, 3], 0), ([5, 9, 4, 3], 0), ([4, 5, 11, 3], 1)])
def test_spike_update_through_woodbury_is_the_exact_minimiser(sizes, l, solver):
    """Where the next layer has fewer than half the neurons (updates.low_rank), the spike block is solved
    through Woodbury's identity with k×k factors: still the exact (clipped) minimiser over all a_{l,t}."""
    s = make_settings(spike_solver=solver)
    state, frames, y = random_problem(30 + l, sizes)
    assert U.low_rank(state.weights[l + 1].shape, s.beta, solver)
    assert isinstance(S._spike_setup(state, l, s)[4], U.WoodburyFactors)
    f = spike_objective(state, frames, y, s, l)
    a_star, _, _ = newton_minimiser(f, state.spikes[l].flatten())
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, l)
    expected = a_star if solver == "free" else a_star.clamp(0, 1)
    assert torch.allclose(new.spikes[l].flatten(), expected, atol=1e-9)
    chol = clone_state(state)  # the n×n Cholesky path gives the same spikes
    S.update_spikes_all_t(chol, frames, s, l, setup=S._spike_setup(chol, l, s, low_rank_ok=False))
    assert torch.allclose(new.spikes[l], chol.spikes[l], atol=1e-10)


def test_woodbury_solve_in_float32_matches_float64_cholesky():
    """The Woodbury solve with float32 right-hand sides (the library's default dtype) against the n×n
    float64 Cholesky solve of both systems, at the default β = 1e-3 (the t = T system's diagonal)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 200, generator=g, dtype=torch.float64) / 200 ** 0.5 * 3
    rhs = torch.randn(4, 50, 200, generator=g, dtype=torch.float64)
    f = U.woodbury_factors(W.float(), 1.0, 0.3, 1.0, 1e-3)
    M_inner, M_last = U.spike_matrices(W, 1.0, 0.3, 1.0, 1e-3)
    expected = torch.cat([torch.linalg.solve(M_inner, rhs[:-1].reshape(-1, 200).T).T.reshape(3, 50, 200),
                          torch.linalg.solve(M_last, rhs[-1].T).T[None]])
    got = U.solve_spikes(None, None, rhs.float(), "free", factors=f)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("solver", ["clip", "box"])
@pytest.mark.parametrize("sizes,l", [([6, 3, 3], 0), ([5, 3, 3, 3], 0), ([5, 3, 3, 3], 1)])
def test_spike_update_exact_when_minimiser_inside_box(sizes, l, solver):
    s = make_settings(spike_solver=solver, beta=0.05)
    state, frames, y = consistent_problem(20 + l, sizes, s)
    f = spike_objective(state, frames, y, s, l)
    a_star, _, _ = newton_minimiser(f, state.spikes[l].flatten())
    assert float(a_star.min()) > 0.02 and float(a_star.max()) < 0.98, "scaled case must be interior"
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, l)
    assert torch.allclose(new.spikes[l].flatten(), a_star, atol=1e-9)
    assert grad_norm(f, new.spikes[l].flatten()) < 1e-8
    assert lagr_state(new, frames, y, s) <= lagr_state(state, frames, y, s) + 1e-12


def projected_gradient(H, g0, iters=20000):
    """Brute force: minimise ½ pᵀHp + g0ᵀp over [0, 1]^n by plain projected gradient."""
    step = 1.0 / float(torch.linalg.eigvalsh(H)[-1])
    p = torch.full_like(g0, 0.5)
    for _ in range(iters):
        p = (p - step * (H @ p + g0)).clamp(0.0, 1.0)
    return p


@pytest.mark.parametrize("sizes,l", SPIKE_CASES)
def test_box_spike_update_is_box_minimiser(sizes, l):
    s = make_settings(spike_solver="box", box_iterations=400)
    state, frames, y = random_problem(30 + l, sizes)
    f = spike_objective(state, frames, y, s, l)
    _, H, g0 = newton_minimiser(f, state.spikes[l].flatten())
    p_ref = projected_gradient(H, g0)
    # the reference satisfies the box KKT conditions
    grad = H @ p_ref + g0
    free = (p_ref > 1e-9) & (p_ref < 1 - 1e-9)
    assert bool((grad[free].abs() < 1e-8).all())
    assert bool((grad[p_ref <= 1e-9] >= -1e-8).all()) and bool((grad[p_ref >= 1 - 1e-9] <= 1e-8).all())
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, l)
    got = new.spikes[l].flatten()
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    assert torch.allclose(got, p_ref, atol=1e-5)
    assert float(f(got)) <= float(f(p_ref)) + 1e-9
    assert lagr_state(new, frames, y, s) <= lagr_state(state, frames, y, s) + 1e-12
    # 'clip' is never better than 'box' on the box
    clip = clone_state(state)
    S.update_spikes_all_t(clip, frames, s.replace(spike_solver="clip"), l)
    assert float(f(got)) <= float(f(clip.spikes[l].flatten())) + 1e-12


def test_box_qp_default_iterations_close_to_box_minimiser():
    """Informative: how close the default 50 FISTA iterations get (monotone from the clipped start)."""
    s = make_settings(spike_solver="box", box_iterations=50)
    state, frames, y = random_problem(31, [6, 4, 3])
    f = spike_objective(state, frames, y, s, 0)
    _, H, g0 = newton_minimiser(f, state.spikes[0].flatten())
    p_ref = projected_gradient(H, g0)
    new = clone_state(state)
    S.update_spikes_all_t(new, frames, s, 0)
    assert float(f(new.spikes[0].flatten())) - float(f(p_ref)) < 1e-6


# ----------------------------------------------------------------------------------------------------
# 4. Hidden potentials
# ----------------------------------------------------------------------------------------------------

GRID = torch.linspace(-5.0, 5.0, 200001, dtype=DT)


def local_cost(zc, z, a, u, t, s):
    """The terms of the Lagrangian that contain z_{l,t}, for candidate values zc (broadcast over the
    leading dims): (ρ/2)(zc − δ z_{t-1} − u_t + θ a_{t-1})² + (ρ/2)(z_{t+1} − δ zc − u_{t+1} + θ a_t)²
    [t < T] + (β/2)(a_t − h(zc))²."""
    T = z.shape[0]
    zp = z[t - 1] if t > 0 else torch.zeros_like(z[0])
    ap = a[t - 1] if t > 0 else torch.zeros_like(a[0])
    c = 0.5 * s.rho * (zc - s.delta * zp - u[t] + s.theta * ap) ** 2
    c = c + 0.5 * s.beta * (a[t] - (zc > s.theta).to(DT)) ** 2
    if t < T - 1:
        c = c + 0.5 * s.rho * (z[t + 1] - s.delta * zc - u[t + 1] + s.theta * a[t]) ** 2
    return c


def grid_min(z, a, u, t, s):
    cand = torch.cat([GRID, torch.tensor([s.theta, s.theta + s.eps], dtype=DT)])
    shape = (-1,) + (1,) * (z.dim() - 1)
    return local_cost(cand.view(shape), z, a, u, t, s).min(dim=0).values


def test_local_cost_is_the_lagrangian_in_one_potential():
    """Consistency of the grid-search cost with the full Lagrangian: changing z_{l,t} changes lagr by
    exactly the change of local_cost (all entries separable)."""
    s = make_settings()
    state, frames, y = random_problem(40, [5, 4, 3, 2])
    g = torch.Generator().manual_seed(0)
    for l in (0, 1):
        u = state.layer_inputs(frames, l) @ state.weights[l].T
        for t in (0, 2, 4):
            new = clone_state(state)
            new.potentials[l][t] = 3 * torch.randn(new.potentials[l][t].shape, generator=g, dtype=DT)
            d_lagr = lagr_state(new, frames, y, s) - lagr_state(state, frames, y, s)
            z, a = state.potentials[l], state.spikes[l]
            d_loc = float(local_cost(new.potentials[l][t], z, a, u, t, s).sum()
                          - local_cost(z[t], z, a, u, t, s).sum())
            assert d_lagr == pytest.approx(d_loc, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("sizes,l", [([6, 4, 3], 0), ([5, 4, 3, 2], 0), ([5, 4, 3, 2], 1)])
@pytest.mark.parametrize("t", [0, 2, 3, 4])
def test_potential_update_at_single_t_is_grid_minimiser(sizes, l, t):
    s = make_settings(beta=1.5)
    state, frames, y = random_problem(50 + l, sizes, zscale=0.7)
    z, a = state.potentials[l], state.spikes[l]
    u = state.layer_inputs(frames, l) @ state.weights[l].T
    new = U.update_potentials(z, a, u, torch.tensor([t]), s.delta, s.theta, s.rho, s.beta, s.eps)[0]
    c_new = local_cost(new, z, a, u, t, s)
    gm = grid_min(z, a, u, t, s)
    assert bool((c_new <= gm + 1e-9).all()), (c_new - gm).max()
    assert bool((c_new >= gm - 1e-7).all())  # the grid is fine enough to see the minimum
    assert bool((new.abs() < 5).all())


@pytest.mark.parametrize("sizes,l", [([6, 4, 3], 0), ([5, 4, 3, 2], 0), ([5, 4, 3, 2], 1)])
def test_potentials_red_black_is_exact_in_two_half_steps(sizes, l):
    s = make_settings(beta=1.5, eps=1e-9)
    state, frames, y = random_problem(60 + l, sizes, zscale=0.7)
    T = frames.shape[0]
    new = clone_state(state)
    S.update_potentials_red_black(new, frames, s, l)
    u = state.layer_inputs(frames, l) @ state.weights[l].T
    a = state.spikes[l]
    # even t first, from the old odd values; then odd t from the new even values
    half = state.potentials[l].clone()
    half[0::2] = new.potentials[l][0::2]
    for t in range(T):
        ref_z = state.potentials[l] if t % 2 == 0 else half
        gm = grid_min(ref_z, a, u, t, s)
        assert bool((local_cost(new.potentials[l][t], ref_z, a, u, t, s) <= gm + 1e-9).all()), t
    before = lagr_state(state, frames, y, s)
    assert lagr_state(new, frames, y, s) <= before + 1e-9
    for l2 in range(state.n_layers):
        if l2 != l:
            assert torch.equal(new.potentials[l2], state.potentials[l2])


def scalar_layer(q, r, a_t, last, s):
    """A 1-sample 1-neuron layer with T = 2 whose potential at t has predictions q and r (spec §3 step 3):
    t = 0: q = u_0, r = z_1 − u_1 + θ a_0;   t = T−1 = 1: q = δ z_0 + u_1 − θ a_0 (z_0 = a_0 = 0)."""
    z = torch.zeros(2, 1, 1, dtype=DT)
    a = torch.zeros(2, 1, 1, dtype=DT)
    u = torch.zeros(2, 1, 1, dtype=DT)
    if last:
        t = 1
        u[1] = q
        a[1] = a_t
    else:
        t = 0
        u[0] = q
        a[0] = a_t
        z[1] = r - s.theta * a_t
    return z, a, u, t


def scalar_update(q, r, a_t, last, s):
    z, a, u, t = scalar_layer(q, r, a_t, last, s)
    new = U.update_potentials(z, a, u, torch.tensor([t]), s.delta, s.theta, s.rho, s.beta, s.eps)[0]
    return float(new), float(local_cost(new, z, a, u, t, s)), float(grid_min(z, a, u, t, s))


# (q, r, a, last, expected branch); θ = 1, δ = 0.9, ρ = 1.3, β = 0.7 (make_settings)
BRANCH_CASES = [
    (1.05, 0.0, 0.1, True, "theta"),      # z* = q > θ, a < 1/2, spiking barely helps f: stay at θ
    (0.95, 0.0, 0.9, True, "theta+eps"),  # z* ≤ θ, a > 1/2: spiking is cheaper
    (3.0, 0.0, 0.2, True, "star"),        # z* far above θ, a < 1/2: spiking still cheaper
    (-1.0, 0.0, 0.8, True, "star"),       # z* far below θ, a > 1/2: not spiking still cheaper
    (1.0, 0.0, 0.9, True, "theta+eps"),   # z* = θ exactly (not spiking side), a > 1/2
    (1.0, 0.0, 0.3, True, "star"),        # z* = θ exactly, a < 1/2: stays at θ (= z*)
    (1.2, 0.9, 0.2, False, "theta"),      # t < T: z* = (q + δr)/(1+δ²) ≈ 1.08
    (0.8, 0.9, 0.85, False, "theta+eps"),  # t < T: z* ≈ 0.88
    (2.5, 2.0, 0.4, False, "star"),       # t < T, a < 1/2, z* far above
    (0.0, -0.5, 0.7, False, "star"),      # t < T, a > 1/2, z* far below
]


@pytest.mark.parametrize("q,r,a_t,last,branch", BRANCH_CASES)
def test_potential_update_branches(q, r, a_t, last, branch):
    s = make_settings()
    z_star = q if last else (q + s.delta * r) / (1 + s.delta ** 2)
    new, c_new, gm = scalar_update(q, r, a_t, last, s)
    expected = {"theta": s.theta, "theta+eps": s.theta + s.eps, "star": z_star}[branch]
    assert new == pytest.approx(expected, abs=1e-12)
    assert c_new <= gm + 1e-10


@hsettings(max_examples=60, deadline=None)
@given(q=st.floats(-3, 3), r=st.floats(-3, 3), a_t=st.floats(0, 1), last=st.booleans(),
       delta=st.floats(0.3, 1.0), rho=st.floats(0.1, 4.0), beta=st.floats(0.05, 4.0))
def test_potential_update_is_grid_minimiser_hypothesis(q, r, a_t, last, delta, rho, beta):
    s = make_settings(delta=delta, rho=rho, beta=beta)
    new, c_new, gm = scalar_update(q, r, a_t, last, s)
    assert c_new <= gm + 1e-9


def test_heaviside_subroutine_hand_cases():
    """C(z) = (ρ/2) f(z) + (β/2)(a − h(z))², θ = 1, ρ = 2, β = 1, ε = 0.01."""
    th, rho, beta, eps = 1.0, 2.0, 1.0, 0.01
    #            z*    f(z*)  f(θ)   a     expected
    cases = [(1.5, 0.0, 0.1, 0.0, 1.0),     # above: Δ1 = 1, Δ2 = −0.2 → Δ1+Δ2 > 0 → θ
             (1.5, 0.0, 1.0, 0.0, 1.5),     # above: Δ1 = 1, Δ2 = −2 → stay z*
             (1.5, 0.0, 0.1, 0.6, 1.5),     # above, a > 1/2 (Δ1 < 0): stay z*
             (0.5, 0.0, 0.1, 1.0, 1.01),    # below: Δ1 = −1, Δ2 = −0.2 → Δ2 − Δ1 > 0 → θ + ε
             (0.5, 0.0, 1.0, 1.0, 0.5),     # below: Δ2 − Δ1 = −1 < 0 → stay z*
             (0.5, 0.0, 0.1, 0.4, 0.5),     # below, a < 1/2: stay z*
             (1.0, 0.0, 0.0, 1.0, 1.01),    # z* = θ counts as below; spiking cheaper → θ + ε
             (1.0, 0.0, 0.0, 0.5, 1.0),     # a = 1/2: Δ1 = 0, Δ2 = 0 → tie, stay z*
             (1.5, 0.0, 0.5, 0.0, 1.5)]     # Δ1 + Δ2 = 0 exactly: tie, stay z*
    zs, fs, ft, a, exp = (torch.tensor(c, dtype=DT) for c in zip(*cases))
    got = U.heaviside_subroutine(zs, fs, ft, a, th, rho, beta, eps)
    assert torch.allclose(got, exp, atol=1e-15), (got, exp)


# ----------------------------------------------------------------------------------------------------
# 5. Dual and full iterations
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 3])
def test_dual_update_formula(chunk):
    s = make_settings(chunk_size=chunk)
    state, frames, y = random_problem(70, [5, 4, 3, 2])
    lam0 = state.dual.clone()
    S.update_dual(state, frames, s)
    z = state.potentials[-1]
    res = z[-1] - s.delta * z[-2] - state.spikes[-1][-1] @ state.weights[-1].T
    assert torch.allclose(state.dual, lam0 + s.output_rho * res, atol=1e-13)
    # T = 1: no previous potential
    z1 = torch.randn(1, 4, 2, dtype=DT)
    u1 = torch.randn(4, 2, dtype=DT)
    assert torch.allclose(U.update_dual(lam0, z1, u1, 0.9, 2.0), lam0 + 2.0 * (z1[0] - u1))


def _objective(state, frames, y, s):
    return lagr_state(state, frames, y, s) + ridge_terms(state, frames, s)


@pytest.mark.parametrize("schedule,output_solve", [("parallel", "potentials"), ("sequential", "sweep")])
@pytest.mark.parametrize("init", ["uniform", "forward"])
def test_iterations_never_increase_lagrangian_with_box_spikes(schedule, output_solve, init, monkeypatch):
    """Block coordinate descent without dual steps (warm-up beyond the iterations) is monotone when every
    block is an exact minimiser. ridge = 0 (only the 1e-10 floor) so that the ridge weight μ, which
    depends on the spikes through G, does not change the objective between blocks; ε tiny."""
    s = make_settings(schedule=schedule, output_solve=output_solve, spike_solver="box", box_iterations=300,
                      ridge=0.0, eps=1e-9, iterations=5, warmup=10, init=init, init_gain=3.0)
    sizes = [6, 4, 3, 3]
    g = torch.Generator().manual_seed(80)
    frames = (torch.rand(5, 5, sizes[0], generator=g) < 0.5).to(DT)
    y = torch.nn.functional.one_hot(torch.arange(5) % 3, 3).to(DT)
    state = S.init_state(frames, y, sizes, s, g)
    state.dual = 0.3 * torch.randn(state.dual.shape, generator=g, dtype=DT)  # fixed, non-zero λ

    trace = []

    def wrap(name):
        orig = getattr(S, name)

        def wrapped(st_, *args, **kw):
            before = _objective(st_, frames, y, s)
            out = orig(st_, *args, **kw)
            trace.append((name, args[-1] if name != "update_output" and isinstance(args[-1], int) else "",
                          before, _objective(st_, frames, y, s)))
            return out
        monkeypatch.setattr(S, name, wrapped)

    for name in ("update_weights", "update_spikes_all_t", "update_potentials_red_black", "update_output"):
        wrap(name)

    cache, gen = S.SolverCache(), torch.Generator().manual_seed(1)
    values = [_objective(state, frames, y, s)]
    lam = state.dual.clone()
    for _ in range(s.iterations):
        S.iterate(state, frames, y, s, cache, gen)
        values.append(_objective(state, frames, y, s))
    assert torch.equal(state.dual, lam)  # no dual step during warm-up
    assert state.iteration == 5
    assert len(trace) >= 5 * 3  # the per-block recorders really ran
    tol = 1e-9 * max(1.0, abs(values[0]))
    bad = [(n, l, b, a) for n, l, b, a in trace if a > b + tol]
    # transitions between recorded blocks (work done inline, e.g. the sequential per-t loop)
    gaps = [(trace[i][0], trace[i + 1][0], trace[i][3], trace[i + 1][2]) for i in range(len(trace) - 1)
            if trace[i + 1][2] > trace[i][3] + tol]
    assert not bad and not gaps, f"blocks that increased L: {bad[:5]}; between blocks: {gaps[:5]}"
    assert all(v1 <= v0 + tol for v0, v1 in zip(values, values[1:])), values
    assert values[-1] < values[0]


@pytest.mark.parametrize("piece_rows", [U.CROSS_PIECE_ROWS, 500])
def test_cross_sums_in_float32_products_stay_within_float32_rounding_of_the_float64_sums(piece_rows):
    """C = Σ x aᵀ with float32 products over pieces of rows added in float64 (cross_dtype float32) is
    within float32 rounding of one piece's sum of the float64 C; with cross_dtype = dtype it is the
    plain product bit for bit; G and the dual term are unaffected."""
    g = torch.Generator().manual_seed(4)
    T, N, n, m = 7, 300, 40, 9
    a = (torch.rand(T, N, n, generator=g) < 0.1).to(torch.uint8)
    x = torch.randn(T, N, m, generator=g).to(torch.float32)
    lam = torch.randn(N, m, generator=g, dtype=torch.float64)
    G64, C64 = U.weight_statistics(a, x, torch.float64, lam, 1.7)
    G, C = U.weight_statistics(a.float(), x, torch.float64, lam, 1.7, cross_dtype=torch.float32,
                               piece_rows=piece_rows)
    assert C.dtype == torch.float64 and torch.equal(G, G64)
    scale = x.abs().max() * math.sqrt(min(piece_rows, T * N))
    assert 0 < (C - C64).abs().max() < 8 * torch.finfo(torch.float32).eps * scale
    _, C_same = U.weight_statistics(a, x, torch.float64, lam, 1.7, cross_dtype=torch.float64)
    assert torch.equal(C_same, C64)
    ref = x.double().reshape(-1, m).T @ a.double().reshape(-1, n) + lam.T @ a[-1].double() / 1.7
    assert torch.allclose(C64, ref, atol=1e-12)
