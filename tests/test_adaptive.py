"""Adaptive penalties (per-layer ρ_l, β_l; residual balancing; continuation) and safeguarded Anderson
acceleration (admm/penalties.py, admm/anderson.py).

- With per-layer penalties every block is still the exact minimiser of the Lagrangian, checked against
  an independently written per-layer Lagrangian (Newton step with the autograd Hessian, grid search).
- Balancing moves ρ and β in the direction of Boyd's rule, and the applied penalty only follows a target
  that moved by the tolerance factor; continuation stops at its cap.
- Anderson: the safeguard rejects an accelerated point that raises the residual; on a linear fixed-point
  iteration it reaches the tolerance in far fewer iterations than the plain map.
- Off, the solver is bitwise the one without these features; on, a resumed run is bitwise the
  uninterrupted one.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from admm_snn.admm import anderson as AA
from admm_snn.admm import penalties as P
from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.lagrangian import lagrangian_terms
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import ADMMState
from admm_snn.errors import SettingsError
from admm_snn.network import forward
from admm_snn.train import train
from test_checkpoint import _problem
from test_updates import DT, lagr
from test_updates import random_problem as _random_problem


pytestmark = pytest.mark.usefixtures("one_thread")


def exact_settings(**kw):
    base = dict(rho=1.3, rho_out=2.1, beta=0.7, delta=0.9, theta=1.0, eps=1e-9, ridge=1e-2, ridge_out=None,
                dtype="float64", gram_dtype="float64", proximal=False, weight_step=1.0, momentum=0.0, step_rule="fixed",
                spike_solver="free", reproject=0, init="uniform", grow_every=0,
                output_loss="square", target_gate=0.0, rho_decay=1.0)  # the spec's one-hot loss; the hinge output is tested in test_hinge.py
    base.update(kw)
    return ADMMSettings(**base)


def random_problem(seed, sizes, T=5, N=4):
    return _random_problem(seed, sizes, T, N, zscale=0.7)


RHOS, BETAS = [1.7, 0.45], [0.3, 2.2]  # per hidden layer, unlike the settings' ρ = 1.3, β = 0.7


def with_layer_penalties(state, rhos=RHOS, betas=BETAS):
    state.aux[P.RHO] = torch.tensor(rhos, dtype=DT)
    state.aux[P.BETA] = torch.tensor(betas, dtype=DT)
    return state


def lagr_of(state, frames, y, s, W=None, Z=None, A=None):
    return lagr(W or state.weights, Z or state.potentials, A or state.spikes, state.dual, frames, y, s,
                rhos=RHOS, betas=BETAS)


SIZES = [5, 3, 4, 3]  # two hidden layers


def test_lagrangian_terms_with_per_layer_penalties():
    s = exact_settings()
    state, frames, y = random_problem(0, SIZES)
    terms = lagrangian_terms(state, frames, y, RHOS, BETAS, s.lif, s.output_rho)
    assert terms["lagrangian"] == pytest.approx(float(lagr_of(state, frames, y, s)), rel=1e-12)


@pytest.mark.parametrize("l", [0, 1])
def test_spike_block_with_per_layer_penalties_is_exact(l):
    """The free spike block of layer l (ρ_l, β_l and the next layer's ρ_{l+1}) is the exact minimiser."""
    s = exact_settings()
    state, frames, y = random_problem(1 + l, SIZES)
    with_layer_penalties(state)

    def f(p):
        A = list(state.spikes)
        A[l] = p.view_as(state.spikes[l])
        return lagr_of(state, frames, y, s, A=A)

    p0 = state.spikes[l].flatten()
    H = torch.autograd.functional.hessian(f, p0)
    z = torch.zeros_like(p0, requires_grad=True)
    g0 = torch.autograd.grad(f(z), z)[0]
    a_star = torch.linalg.solve(H, -g0)
    new = copy.deepcopy(state)
    S.update_spikes_all_t(new, frames, s, l)
    assert torch.allclose(new.spikes[l].flatten(), a_star, atol=1e-9)
    # the settings' penalties would give another point: the per-layer values are really used
    plain = copy.deepcopy(state)
    plain.aux.clear()
    S.update_spikes_all_t(plain, frames, s, l)
    assert not torch.allclose(plain.spikes[l], new.spikes[l], atol=1e-4)


GRID = torch.linspace(-5.0, 5.0, 100001, dtype=DT)


def local_cost(values, state, frames, s, ref, l, t):
    """The terms of the per-layer Lagrangian that hold z_{l,t}, for candidate values broadcast over a
    leading dimension (the entries of z_{l,t} never share a term): ρ_l, β_l of layer l."""
    rho, beta, d, th = RHOS[l], BETAS[l], s.delta, s.theta
    a = state.spikes[l]
    u = state.layer_inputs(frames, l) @ state.weights[l].T
    T = ref.shape[0]
    zp = ref[t - 1] if t > 0 else torch.zeros_like(ref[0])
    ap = a[t - 1] if t > 0 else torch.zeros_like(a[0])
    c = 0.5 * rho * (values - d * zp - u[t] + th * ap) ** 2
    c = c + 0.5 * beta * (a[t] - (values > th).to(DT)) ** 2
    if t < T - 1:
        c = c + 0.5 * rho * (ref[t + 1] - d * values - u[t + 1] + th * a[t]) ** 2
    return c


def test_local_cost_is_the_per_layer_lagrangian_in_one_potential():
    s = exact_settings()
    state, frames, y = random_problem(9, SIZES)
    g = torch.Generator().manual_seed(1)
    for l in (0, 1):
        for t in (0, 3, 4):
            Z = list(state.potentials)
            zl = Z[l].clone()
            zl[t] = 3 * torch.randn(zl[t].shape, generator=g, dtype=DT)
            Z[l] = zl
            d_lagr = float(lagr_of(state, frames, y, s, Z=Z) - lagr_of(state, frames, y, s))
            ref = state.potentials[l]
            d_loc = float(local_cost(zl[t], state, frames, s, ref, l, t).sum()
                          - local_cost(ref[t], state, frames, s, ref, l, t).sum())
            assert d_lagr == pytest.approx(d_loc, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("l", [0, 1])
def test_potential_block_with_per_layer_penalties_is_exact(l):
    """Red-black potentials of layer l with (ρ_l, β_l): every z_{l,t} is the grid minimiser of the
    per-layer Lagrangian given the others (even t from the old odd ones, odd t from the new even ones)."""
    s = exact_settings()
    state, frames, y = random_problem(10 + l, SIZES)
    with_layer_penalties(state)
    new = copy.deepcopy(state)
    S.update_potentials_red_black(new, frames, s, l)
    half = state.potentials[l].clone()
    half[0::2] = new.potentials[l][0::2]
    cand = torch.cat([GRID, torch.tensor([s.theta, s.theta + s.eps], dtype=DT)]).view(-1, 1, 1)
    for t in range(frames.shape[0]):
        ref = state.potentials[l] if t % 2 == 0 else half
        grid_min = local_cost(cand, state, frames, s, ref, l, t).min(dim=0).values
        got = local_cost(new.potentials[l][t], state, frames, s, ref, l, t)
        assert bool((got <= grid_min + 1e-9).all()), t
        assert bool((got >= grid_min - 1e-6).all()), t  # the grid resolves the minimum
    plain = copy.deepcopy(state)
    plain.aux.clear()
    S.update_potentials_red_black(plain, frames, s, l)
    assert not torch.equal(plain.potentials[l], new.potentials[l])


@pytest.mark.parametrize("l", [0, 1, 2])
def test_weight_block_with_per_layer_penalties_is_exact(l):
    """ρ_l multiplies the data term and the ridge of W_l alike: the update is the minimiser of the
    per-layer Lagrangian plus (ρ_l μ/2)‖W_l‖² (gradient zero)."""
    from admm_snn.admm import updates as U
    s = exact_settings()
    state, frames, y = random_problem(20 + l, SIZES)
    with_layer_penalties(state)
    a_in = state.layer_inputs(frames, l).reshape(-1, state.weights[l].shape[1])
    mu = U.ridge_value(a_in.T @ a_in, s.ridge)
    r = s.output_rho if l == 2 else RHOS[l]
    new = copy.deepcopy(state)
    S.update_weights(new, frames, s, S.SolverCache(), l)

    def f(w):
        W = list(state.weights)
        W[l] = w.view_as(state.weights[l])
        return lagr_of(state, frames, y, s, W=W) + 0.5 * r * mu * (w ** 2).sum()

    w = new.weights[l].flatten().clone().requires_grad_(True)
    assert float(torch.autograd.grad(f(w), w)[0].abs().max()) < 1e-8


@pytest.mark.parametrize("order", ["paper", "top-down"])
def test_sequential_blocks_with_per_layer_penalties_are_exact(order, monkeypatch):
    """The sequential schedule, one t at a time: at every (l, t), when the potential update is called the
    spike a_{l,t} just solved is the exact (free) minimiser of the per-layer Lagrangian over a_{l,t}, and
    the new z_{l,t} is the grid minimiser of its local per-layer cost."""
    from admm_snn.admm import updates as U
    s = exact_settings(schedule="sequential", order=order, output_solve="sweep", spike_solver="free")
    state, frames, y = random_problem(30, SIZES, T=4)
    with_layer_penalties(state)
    real = U.update_potentials
    cand = torch.cat([GRID, torch.tensor([s.theta, s.theta + s.eps], dtype=DT)]).view(-1, 1, 1)
    checked = []

    def checked_update(z, a, u, t, *args):
        l = next(i for i, zl in enumerate(state.potentials) if zl is z)
        tt = int(t[0])

        def f(p):
            A = list(state.spikes)
            al = A[l].clone()
            al[tt] = p.view_as(al[tt])
            A[l] = al
            return lagr_of(state, frames, y, s, A=A)

        p = a[tt].flatten().clone().requires_grad_(True)
        assert float(torch.autograd.grad(f(p), p)[0].abs().max()) < 1e-8, (l, tt)
        new = real(z, a, u, t, *args)
        got = local_cost(new[0], state, frames, s, z, l, tt)
        assert bool((got <= local_cost(cand, state, frames, s, z, l, tt).min(dim=0).values + 1e-9).all()), (l, tt)
        checked.append((l, tt))
        return new

    monkeypatch.setattr(U, "update_potentials", checked_update)
    S.sequential_hidden(state, frames, y, s, S.SolverCache(), torch.Generator().manual_seed(3))
    assert sorted(checked) == [(l, t) for l in range(2) for t in range(4)]


# ----------------------------------------------------------------------------------------------------
# Balancing and continuation
# ----------------------------------------------------------------------------------------------------

def forward_state(seed, sizes=(6, 4, 4, 3), T=5, N=6):
    """States of the forward simulation (every hidden dynamics constraint and a = h(z) hold exactly)."""
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(T, N, sizes[0], generator=g) < 0.5).to(DT)
    W = [3 * torch.randn(sizes[l], sizes[l - 1], generator=g, dtype=DT) / math.sqrt(sizes[l - 1])
         for l in range(1, len(sizes))]
    tr = forward(W, frames, exact_settings().lif)
    return ADMMState(W, tr.potentials, tr.spikes, torch.zeros(N, sizes[-1], dtype=DT)), frames


def _update(state, frames, s, snap):
    P.update(state, frames, s, snap, lambda t: t, [slice(None)])


def test_balancing_raises_penalties_when_the_constraints_are_violated():
    """r > μ s: the states violate the dynamics (and a ≠ h(z)) but did not move (snapshot = now)."""
    s = exact_settings(penalty_balance="both", balance_tau=2.0, balance_tolerance=2.0)
    state, frames = forward_state(0)
    g = torch.Generator().manual_seed(1)
    for l in range(2):
        state.potentials[l] += 0.3 * torch.randn(state.potentials[l].shape, generator=g, dtype=DT)
        state.spikes[l] = torch.rand(state.spikes[l].shape, generator=g, dtype=DT)
    _update(state, frames, s, P.snapshot(state, s))
    res = state.aux[P.RESIDUALS]
    assert bool((res[0] > 0).all()) and bool((res[1] == 0).all()) and bool((res[2] > 0).all())
    assert state.aux[P.RHO].tolist() == [2 * s.rho] * 2
    assert state.aux[P.BETA].tolist() == [2 * s.beta] * 2
    assert int(state.aux[P.CHANGES]) == 4


def test_balancing_lowers_penalties_when_the_states_move_but_hold_the_constraints():
    """s > μ r: the states are the exact forward simulation (r = 0) and differ from the snapshot."""
    s = exact_settings(penalty_balance="both", balance_tau=3.0, balance_tolerance=2.0)
    state, frames = forward_state(2)
    before = copy.deepcopy(state)
    for l in range(2):  # another valid trajectory: the snapshot is from perturbed states
        before.potentials[l] = before.potentials[l] + 0.4
        before.potentials[l][0] += 0.8  # moves some potentials across θ
    snap = P.snapshot(before, s)
    _update(state, frames, s, snap)
    res = state.aux[P.RESIDUALS]
    assert float(res[0].abs().max()) < 1e-12 and bool((res[1] > 0).all())
    assert float(res[2].abs().max()) == 0.0 and bool((res[3] > 0).all())
    assert state.aux[P.RHO].tolist() == pytest.approx([s.rho / 3] * 2)
    assert state.aux[P.BETA].tolist() == pytest.approx([s.beta / 3] * 2)


def test_balancing_applies_a_penalty_only_past_the_tolerance():
    """τ = 2, tolerance 5: the target doubles each time, the applied ρ jumps only at 8× (first ≥ 5)."""
    s = exact_settings(penalty_balance="rho", balance_tau=2.0, balance_tolerance=5.0)
    state, frames = forward_state(3)
    state.potentials[0] += 0.5  # dynamics violated, states unmoved (snapshot = now): r > μ s
    state.potentials[1] -= 0.2
    applied = []
    for _ in range(4):
        _update(state, frames, s, P.snapshot(state, s))
        applied.append(state.aux[P.RHO].tolist())
    assert applied == [[s.rho] * 2, [s.rho] * 2, [8 * s.rho] * 2, [8 * s.rho] * 2]
    assert state.aux[P.RHO_TARGET].tolist() == [16 * s.rho] * 2
    assert int(state.aux[P.CHANGES]) == 2  # one change per layer
    assert state.aux[P.BETA].tolist() == [s.beta] * 2  # "rho" leaves β alone


def test_balancing_rule_and_follow():
    assert P.balance_rule(1.0, 11.0, 1.0, 10.0, 2.0) == 2.0
    assert P.balance_rule(1.0, 1.0, 11.0, 10.0, 2.0) == 0.5
    assert P.balance_rule(1.0, 5.0, 1.0, 10.0, 2.0) == 1.0
    assert P.follow(1.0, 4.0, 5.0) == 1.0 and P.follow(1.0, 5.0, 5.0) == 5.0 and P.follow(1.0, 0.2, 5.0) == 0.2


def test_continuation_reaches_its_cap():
    s = exact_settings(rho_growth=2.0, beta_growth=3.0, penalty_cap=8.0)
    state, frames = forward_state(4)
    seen = []
    for _ in range(5):
        _update(state, frames, s, None)
        seen.append((state.aux[P.RHO][0].item(), state.aux[P.BETA][0].item()))
    assert [r for r, _ in seen] == [2 * s.rho, 4 * s.rho, 8 * s.rho, 8 * s.rho, 8 * s.rho]
    assert [b for _, b in seen] == pytest.approx([3 * s.beta, 8 * s.beta, 8 * s.beta, 8 * s.beta, 8 * s.beta])


def test_continuation_in_training_reaches_the_cap_and_reports_it():
    X, lab, _ = _problem()
    s = ADMMSettings(iterations=4, rho_growth=3.0, beta_growth=2.0, penalty_cap=10.0, rho_decay=1.0)
    res = train(X, lab, [8, 8], s, progress=False)
    assert [h["rho_layers"][0] for h in res.history] == pytest.approx([3.0, 9.0, 10.0, 10.0])
    assert [h["beta_layers"][1] for h in res.history] == pytest.approx([0.002, 0.004, 0.008, 0.01])
    # with the penalty decaying by depth each layer grows from, and is capped relative to, its own ρ_l
    res = train(X, lab, [8, 8], s.replace(rho_decay=0.5), progress=False)
    assert [h["rho_layers"][0] for h in res.history] == pytest.approx([1.5, 4.5, 5.0, 5.0])
    assert [h["rho_layers"][1] for h in res.history] == pytest.approx([3.0, 9.0, 10.0, 10.0])


@pytest.mark.parametrize("bad", [dict(penalty_balance="yes"), dict(balance_mu=1.0), dict(balance_tau=0.5),
                                 dict(balance_tolerance=0.9), dict(rho_growth=0.9), dict(beta_growth=float("nan")),
                                 dict(penalty_cap=0.5), dict(anderson=-1), dict(anderson=1.5),
                                 dict(momentum=1.0), dict(momentum=-0.1), dict(momentum=float("nan"))])
def test_bad_settings_are_one_line_errors(bad):
    with pytest.raises(SettingsError) as e:
        ADMMSettings(**bad)
    assert "\n" not in str(e.value) and next(iter(bad)) in str(e.value)


# ----------------------------------------------------------------------------------------------------
# Momentum of the hidden weight step
# ----------------------------------------------------------------------------------------------------

def test_momentum_step_is_the_heavy_ball_recursion():
    """take_weight_step with momentum μ: W_{k+1} = W_k + v_k, v_k = μ v_{k−1} + D_k, D_k the plain
    (relative) step from W_k towards the block minimiser; the first step has no velocity yet."""
    g = torch.Generator().manual_seed(0)
    s = ADMMSettings(momentum=0.6, weight_step=0.05, grow_every=0)
    W = [torch.randn(5, 4, generator=g, dtype=DT), torch.randn(3, 5, generator=g, dtype=DT)]
    state = ADMMState(weights=[w.clone() for w in W], potentials=[], spikes=[], dual=torch.zeros(1), iteration=0)
    v_ref = None
    for k in range(4):
        prev = [w.clone() for w in state.weights[:-1]]
        target = torch.randn(5, 4, generator=g, dtype=DT)  # the sweep's block minimiser W*
        state.weights[0] = target.clone()
        S.take_weight_step(state, prev, s)
        D = 0.05 * prev[0].norm() / (target - prev[0]).norm() * (target - prev[0])
        v_ref = D if v_ref is None else 0.6 * v_ref + D
        assert torch.allclose(state.weights[0], prev[0] + v_ref, rtol=1e-12, atol=1e-12)
        assert torch.allclose(state.aux["momentum_0"], v_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(state.weights[1], W[1])  # the output layer is never stepped


def test_momentum_velocity_restarts_on_a_new_shape():
    D = torch.ones(2, 3, dtype=DT)
    assert torch.equal(U.momentum_velocity(None, D, 0.5), D)
    assert torch.equal(U.momentum_velocity(torch.ones(3, 3, dtype=DT), D, 0.5), D)
    assert torch.equal(U.momentum_velocity(2 * D, D, 0.5), 2 * D)


# ----------------------------------------------------------------------------------------------------
# Anderson acceleration
# ----------------------------------------------------------------------------------------------------

def test_anderson_safeguard_rejects_a_step_that_raises_the_residual():
    """A 1-D map, linear (g = x/2) for x > 0.1 and far from its fixed point below: from the two plain
    points 4 and 2 the secant step lands on 0, where the residual |g(0) − 0| = 3 exceeds |g(2) − 2| = 1.
    The step is rejected and the plain step g(2) = 1 taken instead."""
    def g(x):
        return x / 2 if float(x) > 0.1 else x + 3.0

    aux = {}
    x = torch.tensor([4.0], dtype=DT)
    x, verdict = AA.accelerate(aux, x, g(x), g(x), m=3)
    assert verdict is None and float(x) == 2.0  # no history yet: the plain step
    x, verdict = AA.accelerate(aux, x, g(x), g(x), m=3)
    assert verdict is None and abs(float(x)) < 1e-8  # the accelerated (secant) point, up to the regularisation
    assert int(aux[AA.PENDING]) == 1
    x, verdict = AA.accelerate(aux, x, g(x), g(x), m=3)
    assert verdict is False and float(x) == 1.0  # rejected: the plain step from the last accepted point
    assert aux[AA.STATS].tolist() == [0, 1] and int(aux[AA.PENDING]) == 0
    # on the linear map alone the same secant point lowers the residual (to 0): accepted
    aux = {}
    x = torch.tensor([4.0], dtype=DT)
    for _ in range(2):
        x, verdict = AA.accelerate(aux, x, x / 2, x / 2, m=3)
    x, verdict = AA.accelerate(aux, x, x / 2, x / 2, m=3)
    assert verdict is True and aux[AA.STATS].tolist() == [1, 0] and abs(float(x)) < 1e-8


def _iterations_to(tol, step, x0, x_star, limit=2000):
    x = x0
    for k in range(limit):
        if float((x - x_star).norm()) < tol:
            return k
        x = step(x)
    return limit


def test_anderson_accelerates_a_linear_fixed_point_iteration():
    g_ = torch.Generator().manual_seed(0)
    n = 40
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g_, dtype=DT))
    A = Q @ torch.diag(torch.linspace(0.0, 0.97, n, dtype=DT)) @ Q.T
    b = torch.randn(n, generator=g_, dtype=DT)
    x_star = torch.linalg.solve(torch.eye(n, dtype=DT) - A, b)
    x0 = torch.zeros(n, dtype=DT)

    def plain(x):
        return A @ x + b

    aux = {}

    def accelerated(x):
        gx = plain(x)
        return AA.accelerate(aux, x, gx, gx, m=8)[0]

    k_plain = _iterations_to(1e-8, plain, x0, x_star)
    k_aa = _iterations_to(1e-8, accelerated, x0, x_star)
    assert k_plain > 500 and k_aa < k_plain / 5, (k_plain, k_aa)


def test_anderson_in_the_solver_follows_the_safeguard(monkeypatch):
    """In training, every accelerated point is judged by the next iteration: accepted exactly when the
    ADMM map's residual did not rise, and a rejected point leaves the weights at the stored plain step.
    The rule is checked at every judged point (which points are rejected depends on the rounding of the
    machine's kernels, so the test does not ask for a particular mix of verdicts)."""
    X, lab, _ = _problem()
    s = ADMMSettings(iterations=8, anderson=3, step_rule="fixed", weight_step=1.0, momentum=0.0)
    judged, plain = [], AA.accelerate

    def recording(aux, x, Tx, gx, m, reg=AA.REGULARISATION):
        pending = AA.PENDING in aux and int(aux[AA.PENDING]) == 1
        before = float(aux[AA.RES]) if pending else None
        stored = aux[AA.G].clone() if pending else None
        nxt, verdict = plain(aux, x, Tx, gx, m, reg)
        if pending:
            judged.append((float((Tx - x).norm()), before, verdict, torch.equal(nxt, stored)))
        else:
            assert verdict is None
        return nxt, verdict

    monkeypatch.setattr(AA, "accelerate", recording)
    res = train(X, lab, [8, 8], s, progress=False)
    h, state = res.history[-1], res.state
    acc, rej = h["anderson_accepted"], h["anderson_rejected"]
    ended_rejected = int(state.aux[AA.PENDING]) == 0
    # from iteration 3 on, every iteration judges an accelerated point, or (after a rejection) takes
    # the plain step: 8 − 2 = accepted + rejected + (rejections followed by a plain iteration)
    assert acc + 2 * rej - int(ended_rejected) == 6
    assert len(judged) == acc + rej >= 3
    for residual, before, verdict, returned_stored in judged:
        assert verdict == (residual <= before)  # the safeguard's rule
        assert returned_stored == (not verdict)  # a rejected point returns the stored plain step
    if ended_rejected:  # the last iteration rejected its point: the weights are the stored plain step
        assert torch.equal(AA.flatten(state.weights[:-1]), state.aux[AA.G])
    else:
        assert not torch.equal(AA.flatten(state.weights[:-1]), state.aux[AA.G])


# ----------------------------------------------------------------------------------------------------
# Off: the solver as before; on: bitwise resume
# ----------------------------------------------------------------------------------------------------

def reference_iterate(state, frames, y, settings, cache, generator):
    """solver.iterate as it was before penalties.py and anderson.py (independent copy)."""
    if settings.schedule == "parallel":
        hidden, output = S.parallel_hidden, S.parallel_output
    else:
        hidden, output = S.sequential_hidden, S.sequential_output
    stepping = settings.step_rule == "relative" or settings.weight_step != 1.0
    previous = [w.clone() for w in state.weights[:-1]] if stepping else None
    hidden(state, frames, y, settings, cache, generator)
    if stepping:
        S.take_weight_step(state, previous, settings)
    if settings.reproject and (state.iteration + 1) % settings.reproject == 0:
        S.reproject(state, frames, settings, cache)
    output(state, frames, y, settings, cache, generator)
    if settings.dual and state.iteration >= settings.warmup:
        S.update_dual(state, frames, settings)
    state.iteration += 1


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_features_off_give_the_solver_without_them_bitwise(preset):
    X, lab, _ = _problem()
    s = ADMMSettings(iterations=4, momentum=0.0) if preset == "default" else ADMMSettings.paper(iterations=4, warmup=1)
    y = torch.nn.functional.one_hot(lab, 3).float()
    states = []
    # every layer's states updated (growth on the shallow network is tests/test_growth.py's)
    every_layer = functools.partial(S.iterate, truncate=False)
    for step in (every_layer, reference_iterate):
        gen, cache = torch.Generator().manual_seed(s.seed), S.SolverCache()
        state = S.init_state(X, y, [20, 8, 8, 3], s, gen, cache=cache)
        for _ in range(4):
            step(state, X, y, s, cache, gen)
        states.append(state)
    a, b = states
    assert a.aux == {}
    for x, z in zip(a.weights + a.potentials + a.spikes + [a.dual], b.weights + b.potentials + b.spikes + [b.dual]):
        assert torch.equal(x, z)


def _strip(history):
    return [{k: v for k, v in m.items() if k not in ("seconds", "wall_s", "report_s")} for m in history]


@pytest.mark.parametrize("change", [
    dict(penalty_balance="both"),
    dict(rho_growth=1.5, beta_growth=2.0),
    dict(anderson=2),
    dict(momentum=0.5),
    dict(preset="paper", penalty_balance="both", rho_growth=1.2, anderson=2),
])
@pytest.mark.determinism
def test_resume_with_feature_on_is_bitwise(tmp_path, change):
    change = dict(change)
    paper = change.pop("preset", None) == "paper"
    s = ADMMSettings.paper(iterations=6, warmup=2, **change) if paper else ADMMSettings(iterations=6, **change)
    X, lab, val = _problem()
    a = train(X, lab, [8, 8], s, val=val, out=tmp_path / "a", checkpoint_every=1, progress=False)
    train(X, lab, [8, 8], s.replace(iterations=3), val=val, out=tmp_path / "b", checkpoint_every=1, progress=False)
    b = train(X, lab, [8, 8], s, val=val, out=tmp_path / "b", checkpoint_every=1, resume=True, progress=False)
    for wa, wb in zip(a.final_weights + a.weights, b.final_weights + b.weights):
        assert torch.equal(wa, wb)
    assert _strip(a.history) == _strip(b.history)
    assert a.state.aux.keys() == b.state.aux.keys() and a.state.aux
    for k in a.state.aux:
        assert torch.equal(a.state.aux[k], b.state.aux[k]), k
