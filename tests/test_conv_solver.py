"""ADMM for convolutional networks (admm/conv_solver.py): each block is the exact minimiser of its block
objective (written out here with autograd, independently of the solver's sums), a full-image-kernel
network trains exactly as the dense solver trains the dense network, and a small conv network learns on
real MNIST."""

from __future__ import annotations

import time

import pytest
import torch

from admm_snn import conv_network as CN
from admm_snn.admm import conv_solver as CS
from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import ADMMState
from admm_snn.errors import SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64

SMALL = ("3c3s2p1-p2-2c2-a2-4", (2, 11, 11))  # stride, padding, sum pooling into a conv, average into a dense


def _problem(arch, shape, n_out=3, N=12, T=6, seed=0, tol=1e-4, **changes):
    g = torch.Generator().manual_seed(seed)
    prob = CS.conv_problem(arch, shape, n_out, cg_tol=tol)
    frames = (torch.rand(T, N, prob.sizes[0], generator=g) < 0.4).to(DT)
    labels = torch.arange(N) % n_out
    y = torch.nn.functional.one_hot(labels, n_out).to(DT)
    # one ρ for every layer: the independent objectives below use settings.rho (per-layer ρ_l: test_adaptive.py)
    settings = ADMMSettings(dtype="float64", grow_every=0, **{"rho_decay": 1.0, **changes})
    state = CS.init_state(frames, y, prob, settings, g, S.SolverCache())
    return prob, frames, y, settings, state, g


def _copy(state: ADMMState) -> ADMMState:
    return ADMMState([w.clone() for w in state.weights], [z.clone() for z in state.potentials],
                     [a.clone() for a in state.spikes], state.dual.clone(), state.iteration, dict(state.aux))


def _after_one_iteration(**changes):
    prob, frames, y, settings, state, g = _problem(*SMALL, **changes)
    # leave the forward start (where re-projection puts it) so that every term of every block is non-zero
    CS.iterate(state, frames, y, prob, settings.replace(reproject=0), S.SolverCache(), g)
    return prob, frames, y, settings, state


@pytest.mark.parametrize("proximal", [False, True])
@pytest.mark.parametrize("l", [0, 1, 2])
def test_weight_block_is_the_exact_minimiser(l, proximal):
    """W_l = argmin Σ_t ‖x_{l,t} − A_l(W) a_{l-1,t}‖² + μ‖W − W₀‖² with μ = ridge·tr(G)/n: the minimiser of
    this quadratic from its autograd gradient and Hessian (tr G/n read off the Hessian, which is
    2 I ⊗ G) — conv with stride and padding (l = 0), conv after sum pooling (1), dense after average
    pooling (2)."""
    prob, frames, y, settings, state = _after_one_iteration(proximal=proximal, ridge=0.3)
    layer, W0 = prob.net[l], state.weights[l].clone()
    x = U.targets(state.potentials[l], state.spikes[l], settings.delta, settings.theta)
    inputs = state.layer_inputs(frames, l)
    new = _copy(state)
    CS.update_weights(new, frames, prob, settings, S.SolverCache(), l)

    def data(w):
        return ((x - layer.current(inputs, w.reshape(W0.shape))) ** 2).sum()

    w0 = torch.zeros(W0.numel(), dtype=DT)
    H = torch.autograd.functional.hessian(data, w0)
    grad0 = torch.autograd.functional.jacobian(data, w0)
    scale = float(torch.diagonal(H).sum()) / (2 * W0.numel())  # tr(G)/n
    mu = 0.3 * scale + 1e-10 * max(scale, 1.0)
    anchor = W0.reshape(-1) if proximal else torch.zeros_like(w0)
    ref = torch.linalg.solve(H / 2 + mu * torch.eye(w0.numel(), dtype=DT), -grad0 / 2 + mu * anchor)
    assert torch.allclose(new.weights[l].reshape(-1), ref, atol=1e-9, rtol=1e-9)
    assert not torch.allclose(ref, W0.reshape(-1), atol=1e-6)  # the block moved the weights


def _spike_objective(state, frames, prob, settings, l):
    """J(a_l): every term of the Lagrangian that holds a_l, given everything else (free spikes)."""
    d, th = settings.delta, settings.theta
    z, u = state.potentials[l], prob.net[l].current(state.layer_inputs(frames, l), state.weights[l])
    nxt, W = prob.net[l + 1], state.weights[l + 1]
    out = l + 1 == state.n_layers - 1
    c = U.targets(state.potentials[l + 1], None if out else state.spikes[l + 1], d, th)
    rho_next = settings.output_rho if out else settings.rho
    h = (z > th).to(DT)

    def J(a):
        own = z[1:] - d * z[:-1] - u[1:] + th * a[:-1]  # the dynamics of layer l at t+1, t < T
        A_a = nxt.current(a, W)
        val = settings.rho / 2 * (own ** 2).sum() + rho_next / 2 * ((c - A_a) ** 2).sum() \
            + settings.beta / 2 * ((a - h) ** 2).sum()
        if out:  # ⟨λ, z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T}⟩: the part with a
            val = val - (state.dual * A_a[-1]).sum()
        return val

    return J


@pytest.mark.parametrize("l,method", [(0, "cg"), (0, "direct"), (0, "auto"), (1, "auto")])
def test_spike_block_meets_its_tolerance(l, method):
    """Layer 0 feeds a convolution (after pooling): CG to the problem's tolerance, i.e. per (t, sample)
    ‖∇J(a)‖ ≤ tol·‖∇J(0)‖ (the block is separable over (t, sample) and ∇J = Ma − b), or the direct
    solve through the pooled space, exact ("auto" picks it for this small layer). Layer 1 feeds an
    average-pooled dense layer: the dense block's Cholesky solve, exact."""
    tol = 1e-2  # loose, so that CG stops at it (the block's operator has low rank: CG is exact in a few steps)
    prob, frames, y, settings, state = _after_one_iteration()
    prob.cg_tol = tol
    prob.spike_solve = method
    cg = l == 0 and method == "cg"
    assert l == 1 or prob.spike_method(l) == ("cg" if cg else "direct")
    new = _copy(state)
    W = state.weights[l]
    u = prob.net[l].current(state.layer_inputs(frames, l), W)
    CS.update_spikes(new, frames, prob, settings, l, u)
    J = _spike_objective(state, frames, prob, settings, l)
    a = new.spikes[l].clone().requires_grad_(True)
    zero = torch.zeros_like(a, requires_grad=True)
    g_a, = torch.autograd.grad(J(a), a)
    g_0, = torch.autograd.grad(J(zero), zero)
    n_0, n_a = g_0.norm(dim=-1), g_a.norm(dim=-1)
    assert float(n_a[n_0 == 0].sum()) <= 1e-12  # b = 0 rows (silent, no target): a = 0
    rel = n_a[n_0 > 0] / n_0[n_0 > 0]
    if cg:
        assert float(rel.max()) <= tol * (1 + 1e-6)
        assert float(rel.max()) > 1e-12  # CG stopped at its tolerance, not at an exact solve
        assert all(r <= tol for _, r in prob.cg_log[0])
    else:
        assert float(rel.max()) <= 1e-9
        assert 0 not in prob.cg_log  # no CG ran
    assert not torch.allclose(new.spikes[l], state.spikes[l], atol=1e-6)
    # a tighter tolerance solves the same system more exactly (the CG answer is the block minimiser)
    prob.cg_tol = 1e-11
    prob.spike_solve = "cg"
    tight = _copy(state)
    CS.update_spikes(tight, frames, prob, settings, l, u)
    assert torch.allclose(tight.spikes[l], new.spikes[l], atol=0.05)
    # ... and that answer is the block's minimiser: J is quadratic with Hessian ρ_{l+1} AᵀA + (ρθ² + β) I
    # (t < T), ρ_{l+1} AᵀA + β I (t = T), A the next layer's explicit matrix, and ∇J(0) = −b
    nxt = prob.net[l + 1]
    A = nxt.current(torch.eye(nxt.n_in, dtype=DT), state.weights[l + 1]).T
    rho_next = settings.output_rho if l + 1 == state.n_layers - 1 else settings.rho
    AtA = rho_next * A.T @ A
    eye = torch.eye(nxt.n_in, dtype=DT)
    inner = torch.linalg.solve(AtA + (settings.rho * settings.theta ** 2 + settings.beta) * eye, -g_0[:-1].reshape(-1, nxt.n_in).T).T
    last = torch.linalg.solve(AtA + settings.beta * eye, -g_0[-1].T).T
    exact = torch.cat([inner.reshape(g_0[:-1].shape), last[None]])
    assert torch.allclose(tight.spikes[l], exact, atol=1e-8, rtol=1e-8)
    if not cg:
        assert torch.allclose(new.spikes[l], exact, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("method", ["cg", "direct"])
def test_full_image_kernels_train_as_the_dense_network(method):
    """A conv network whose kernels cover the whole image (6c7 on 7×7, then 4c1 on 1×1) is the dense
    network 98-6-4-3: two ADMM iterations of the conv solver (its spike block under the 4c1 layer by CG
    at a tight tolerance, or by the direct solve) give the dense solver's weights, states and dual."""
    prob, frames, y, settings, state, g = _problem("6c7-4c1", (2, 7, 7), N=16, T=8, tol=1e-13, dual=True, warmup=0)
    prob.spike_solve = method
    dense = _copy(state)
    dense.weights = [w.reshape(w.shape[0], -1).clone() for w in state.weights]
    g_dense = torch.Generator().manual_seed(5)
    g_conv = torch.Generator().manual_seed(5)
    cache_c, cache_d = S.SolverCache(), S.SolverCache()
    for _ in range(2):
        CS.iterate(state, frames, y, prob, settings, cache_c, g_conv)
        S.iterate(dense, frames, y, settings, cache_d, g_dense)
    assert sum(float(a.sum()) for a in dense.spikes) > 0
    for wc, wd in zip(state.weights, dense.weights):
        assert torch.allclose(wc.reshape(wd.shape), wd, atol=1e-8, rtol=1e-8)
    for a, b in zip(state.spikes + state.potentials, dense.spikes + dense.potentials):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)
    assert torch.allclose(state.dual, dense.dual, atol=1e-8) and float(dense.dual.abs().max()) > 0
    assert (max(it for it, _ in prob.cg_log[0]) > 0) if method == "cg" else 0 not in prob.cg_log


@pytest.mark.parametrize("change,needle", [
    (dict(schedule="sequential"), "schedule"), (dict(order="paper"), "order"), (dict(l1=0.1), "l1"),
    (dict(anderson=2), "anderson"), (dict(penalty_balance="rho"), "penalty_balance"),
    (dict(spike_solver="box"), "box"),
])
def test_unsupported_settings_are_one_line_errors(change, needle):
    prob = CS.conv_problem(*SMALL, 3)
    with pytest.raises(SettingsError) as e:
        CS.check_settings(prob, ADMMSettings(**change))
    assert "\n" not in str(e.value) and needle in str(e.value)
    with pytest.raises(SettingsError):
        CS.conv_problem(*SMALL, 3, cg_tol=0.0)
    with pytest.raises(SettingsError) as e:
        CS.conv_problem(*SMALL, 3, spike_solve="lu")
    assert "\n" not in str(e.value) and "'lu'" in str(e.value)


def test_a_conv_network_learns_on_mnist(shared_data, tmp_path):
    """4c5-p2-8c3s2 (a conv layer whose spikes reach the next conv layer through pooling: the CG block)
    on 400 real MNIST images, T = 8: random weights are at chance; the readout fitted to the random
    features at the start is not enough: ADMM raises the training accuracy clearly above it and the
    held-out accuracy with it."""
    from admm_snn.data.idx import load_image_dataset
    ds = load_image_dataset(shared_data / "mnist", "train", time_steps=8, limit=900, cache_dir=tmp_path)
    X, lab = ds.time_major(), ds.labels
    Xtr, ltr, Xva, lva = X[:, :400], lab[:400], X[:, 400:], lab[400:]
    prob = CS.conv_problem("4c5-p2-8c3s2", (1, 28, 28), 10)
    settings = ADMMSettings(grow_every=0)
    y = torch.nn.functional.one_hot(ltr, 10).float()
    g = torch.Generator().manual_seed(0)

    def acc(w, X_, l_):
        return float((CS.predict(w, X_, prob, settings) == l_).float().mean())

    random = CN.init_weights(prob.net, prob.input_shape, 10, settings.init_gain, torch.Generator().manual_seed(0))
    assert acc(random, Xtr, ltr) < 0.3  # chance is 0.1
    cache = S.SolverCache()
    state = CS.init_state(Xtr, y, prob, settings, g, cache)
    start_train, start_val = acc(state.weights, Xtr, ltr), acc(state.weights, Xva, lva)
    t0 = time.perf_counter()
    for _ in range(4):
        CS.iterate(state, Xtr, y, prob, settings, cache, g)
    per_iteration = (time.perf_counter() - t0) / 4
    train, val = acc(state.weights, Xtr, ltr), acc(state.weights, Xva, lva)
    assert train > 0.5 and train >= start_train + 0.03, (start_train, train)
    assert val > start_val, (start_val, val)
    assert per_iteration < 30


def test_rate_calibration_on_a_sample_of_many_recordings():
    """Above CS.CALIBRATION_SAMPLES samples the start calibrates on evenly spaced ones (the first hidden
    layer then fires at the target rate on all samples within a few thousandths) and costs less."""
    assert CS.calibration_samples(CS.CALIBRATION_SAMPLES) is None
    idx = CS.calibration_samples(1000)
    assert idx.numel() == CS.CALIBRATION_SAMPLES and int(idx[0]) == 0 and int(idx[-1]) < 1000
    assert bool((idx[1:] > idx[:-1]).all())
    arch, shape = SMALL
    prob, frames, y, settings, state, g = _problem(arch, shape, N=3 * CS.CALIBRATION_SAMPLES, T=5, init_rate=0.08)
    rate = float(state.spikes[0].mean())
    assert abs(rate - 0.08) < 0.005, rate
    # the same start on the sample alone fires at the target up to the bisection's resolution
    sample = CS.calibration_samples(frames.shape[1])
    sub = CS.init_state(frames[:, sample], y[sample], prob, settings, torch.Generator().manual_seed(0))
    assert abs(float(sub.spikes[0].mean()) - 0.08) < 0.002
