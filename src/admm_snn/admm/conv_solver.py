"""ADMM for convolutional LIF networks: the dense solver's parallel schedule (admm/solver.py) with the
convolutional blocks of admm/conv.py.

The problem is the dense one (spec §2) with the operator of each layer A_l(W_l) a = W_l ∗ pool(a) for a
convolution and W_l flatten(pool(a)) for a dense layer (:mod:`admm_snn.conv_network`):

    min  ‖z_{L,T} − y‖² (or the squared hinge)
         + Σ_{l<L} Σ_t (ρ_l/2) ‖z_{l,t} − δ z_{l,t-1} − A_l a_{l-1,t} + θ a_{l,t-1}‖² + (β_l/2) ‖a_{l,t} − h(z_{l,t})‖²
         + Σ_t (ρ_L/2) ‖z_{L,t} − δ z_{L,t-1} − W_L a_{L-1,t}‖² + ⟨λ, z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T}⟩
         + the weight ridge (ρ_l μ_l/2)‖W_l − W₀‖²

The state is the dense :class:`ADMMState`: potentials and spikes flat, (T, N, C·H·W) in ``reshape``'s
channel-major order, so every element-wise block (potentials, targets, the output block, the dual) is the
dense code itself; only the blocks through an operator differ:

- **weights of a conv layer**: least squares over the kernel with the patch Gram (conv.patch_sums,
  conv.solve_conv_weights), summed over positions, time and samples;
- **spikes of a layer feeding a conv layer**: (ρ_{l+1} AᵀA + c I) a_t = b_t, solved exactly through the
  pooled space by Cholesky factors of c I + κ CᵀC (conv.pooled_factors) or matrix-free by CG
  (conv.solve_spikes_cg) to the problem's relative tolerance, as conv.spike_solve_method chooses;
- a layer feeding a **dense** layer (pooled or not) uses the dense spike block with the dense layer's
  effective matrix W_{l+1} P (P the pooling's matrix; P = I without pooling).

One iteration (:func:`iterate`): hidden layers from the top down, each: spikes, potentials (red-black in
time), weights; the weight step of the settings (relative step, momentum) after the sweep; the
re-projection onto the forward simulation; the output block of the dense solver on the flattened last
hidden spikes; the dual. Settings the convolutional solver does not implement (the sequential schedule,
the paper's order, the L1 split, adaptive penalties, Anderson acceleration, the box spike solver through
a convolution) are one-line errors. ``deep_init`` is a dense-network option: every conv network layer is
drawn at random (and rate-calibrated with ``init_rate``). All samples are processed at once
(``chunk_size`` bounds only the output block's blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import conv_network as CN
from ..errors import SettingsError
from ..network import heaviside, leaky_recurrence, simulate
from . import conv as CV
from . import penalties as P
from . import solver as S
from . import sparsity as SP
from . import updates as U
from .settings import ADMMSettings
from .state import ADMMState, uniform_state
from .state import calibrate_rates as calibrate

PATCH_ELEMENTS = 1 << 22
"""The conv weight block forms its patch matrices for blocks of (time step, sample) images whose patches
hold about this many numbers (32 MiB in float64); G and C are plain sums over the blocks."""


@dataclass
class ConvProblem:
    """The network being trained: its weighted layers (:func:`conv_network.network_layers`, the output
    layer last), how the spike blocks under a convolution are solved (``spike_solve``: "auto", "direct"
    or "cg", :func:`conv.spike_solve_method`) and the CG spike block's relative tolerance and iteration
    cap."""

    net: list
    cg_tol: float = 1e-4
    cg_max_iterations: int = 100
    cg_log: dict = field(default_factory=dict)
    """layer l → (iterations, relative residual) of each CG solve of its last spike block (t < T, t = T);
    only the layers solved by CG."""
    spike_solve: str = "auto"

    def spike_method(self, l: int) -> str:
        """"direct" or "cg": how the spikes of hidden layer l (0-based), which feed the conv layer l + 1,
        are solved."""
        nxt = self.net[l + 1]
        return CV.spike_solve_method(tuple(nxt.pooled_shape), tuple(nxt.out_shape), nxt.kernel, self.spike_solve)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.net[0].in_shape)

    @property
    def sizes(self) -> list[int]:
        """Units per layer, the input first: what the dense solver calls ``sizes``."""
        return [self.net[0].n_in] + [L.n_out for L in self.net]


def conv_problem(arch, input_shape, n_outputs: int, cg_tol: float = 1e-4, cg_max_iterations: int = 100,
                 spike_solve: str = "auto") -> ConvProblem:
    """The :class:`ConvProblem` of an architecture (string or parsed) on inputs of ``input_shape``."""
    if not (0 < cg_tol < 1):
        raise SettingsError(f"cg_tol={cg_tol} must be in (0, 1)")
    if isinstance(cg_max_iterations, bool) or not isinstance(cg_max_iterations, int) or cg_max_iterations < 1:
        raise SettingsError(f"cg_max_iterations={cg_max_iterations!r} must be an integer >= 1")
    CV.check_spike_solve(spike_solve)
    return ConvProblem(CN.network_layers(arch, input_shape, n_outputs), cg_tol, cg_max_iterations,
                       spike_solve=spike_solve)


def check_settings(problem: ConvProblem, settings: ADMMSettings) -> None:
    """A one-line :class:`SettingsError` for a setting the convolutional solver does not implement."""
    unsupported = [("schedule", settings.schedule != "parallel", "parallel"),
                   ("order", settings.order != "top-down", "top-down"),
                   ("l1", settings.l1 > 0, "0"),
                   ("anderson", settings.anderson > 0, "0"),
                   ("penalty_balance", P.active(settings), "off, with rho_growth = beta_growth = 1")]
    for name, bad, fix in unsupported:
        if bad:
            raise SettingsError(f"{name}={getattr(settings, name)!r} is not supported by the convolutional solver; "
                                f"use {fix}")
    if settings.spike_solver == "box" and any(L.kind == "conv" for L in problem.net[1:]):
        raise SettingsError("spike_solver='box' is not supported for spikes that feed a convolution; use free or clip")


INPUT_PATCH_GRAM = ("conv-input-gram",)
"""The cache key of the first conv layer's patch Gram of the frames (:func:`update_weights`)."""


def flat(frames: torch.Tensor, problem: ConvProblem) -> torch.Tensor:
    """Frames (T, N, C·H·W) or (T, N, C, H, W) as (T, N, C·H·W)."""
    return CN.flat_frames(frames, problem.input_shape)


# ----------------------------------------------------------------------------------------------------
# Start and re-projection
# ----------------------------------------------------------------------------------------------------

CALIBRATION_SAMPLES = 256
"""Samples on which ``init_rate`` calibrates a conv network's initial weight scales: a conv layer has
thousands of neurons per sample (8c5 on 34×34: 7,200), so 256 samples give millions of spike decisions per
rate, and the bisection (about 15 forward simulations per layer) costs less than half (599 N-MNIST-shaped
recordings, T = 10, one thread on a shared 2-core Xeon: 12c5-p2-32c5-p2-128 26.1 s on all, 11.0 s on
256; 8c5-p4-64 12.2 s / 5.7 s)."""


def calibration_samples(n: int, n_local: int | None = None, start: int = 0) -> torch.Tensor | None:
    """:func:`solver.calibration_indices` with k = :data:`CALIBRATION_SAMPLES`: evenly spaced, None for n ≤ k;
    with ``n_local``, ``start``: the part of that global set among this process's samples start.. (as
    indices into them)."""
    return S.calibration_indices(n, n_local, start, k=CALIBRATION_SAMPLES)


def calibrate_rates(weights: list[torch.Tensor], frames: torch.Tensor, problem: ConvProblem, params,
                    target: float, steps: int = 14, reduce=lambda t: t, keep=()) -> list[torch.Tensor]:
    """:func:`state.calibrate_rates` with the layers' operators A_l (the current A_l(sW) a = s·A_l(W) a is
    linear in the scale s): each hidden layer's weights scaled, bottom up, to the mean firing rate
    ``target`` on ``frames``, except the copy layers in ``keep``; ``reduce`` sums the spike and unit
    counts over processes."""
    return calibrate(weights, frames, params, target, reduce=reduce, steps=steps,
                     current=CN.currents(problem.net), keep=keep)


def reproject(state: ADMMState, frames: torch.Tensor, problem: ConvProblem, settings: ADMMSettings) -> None:
    """Hidden potentials and spikes ← the exact forward simulation of the current weights:
    z_{l,t} = δ z_{l,t-1} + A_l a_{l-1,t} − θ a_{l,t-1}, a_{l,t} = h(z_{l,t}) (:func:`network.lif_recurrence`)."""
    trace = simulate(state.weights[:-1], frames, settings.lif, output=False, current=CN.currents(problem.net))
    for l in range(state.n_layers - 1):
        state.potentials[l].copy_(trace.potentials[l])
        state.spikes[l].copy_(trace.spikes[l])


def _forward_states(state, frames, problem, settings) -> None:
    """Every state of the forward simulation: hidden layers by :func:`reproject`, then the output's leaky
    integration z_{L,t} = δ z_{L,t-1} + W_L flatten(a_{L-1,t})."""
    reproject(state, frames, problem, settings)
    W = state.weights[-1]
    state.potentials[-1].copy_(leaky_recurrence(state.spikes[-1].to(W.dtype) @ W.T, settings.lif))


def init_state(frames: torch.Tensor, y: torch.Tensor, problem: ConvProblem, settings: ADMMSettings,
               generator: torch.Generator, cache: S.SolverCache | None = None,
               shard: tuple[int, int] | None = None) -> ADMMState:
    """The starting point, as :func:`solver.init_state`: ``init="forward"`` draws random weights
    (:func:`conv_network.init_weights` with ``init_gain``), with ``deep_init="identity"`` sets the copy
    layers (:func:`conv_network.copy_layers`: equal channels or widths after the first hidden layer) to
    :func:`conv_network.identity_weight`, rate-calibrates the other hidden layers (``init_rate``), takes the states of their forward simulation and fits the output block to them;
    ``init="uniform"``: W = 0, z and a uniform in [0, 1), λ = 0. ``y``: one-hot targets (N, n_L).
    ``shard`` = (start, n_total): these frames are samples start.. of n_total (data-parallel): the
    calibration takes this process's part of the one-process subsample (:func:`calibration_samples`)
    and sums its spike counts over processes with ``cache.reduce``."""
    check_settings(problem, settings)
    frames = flat(frames, problem)
    dtype, device = S.DTYPES[settings.dtype], frames.device
    T, N = frames.shape[0], frames.shape[1]
    sizes = problem.sizes
    if tuple(y.shape) != (N, sizes[-1]):
        raise SettingsError(f"targets have shape {tuple(y.shape)}; expected ({N}, {sizes[-1]}) one-hot rows")
    if settings.init == "uniform":
        weights = [torch.zeros(L.weight_shape, dtype=dtype, device=device) for L in problem.net]
        pots, spikes = uniform_state(sizes, T, N, generator, dtype, device)
    else:
        weights = CN.init_weights(problem.net, problem.input_shape, sizes[-1], settings.init_gain, generator,
                                  dtype, device)
        copies = CN.copy_layers(problem.net) if settings.deep_init == "identity" else []
        for l in copies:  # deep layers start as copies of the layer below, as in dense networks
            weights[l] = CN.identity_weight(problem.net[l], settings.theta * settings.identity_gain,
                                            settings.identity_noise, generator, dtype, device)
        if settings.init_rate is not None:
            start, n_total = shard if shard is not None else (0, N)
            sample = calibration_samples(n_total, N, start)
            weights = calibrate_rates(weights, frames if sample is None else frames[:, sample.to(device)], problem,
                                      settings.lif, settings.init_rate, reduce=(cache or S.SolverCache()).reduce,
                                      keep=copies)
        pots = [torch.empty(T, N, n, dtype=dtype, device=device) for n in sizes[1:]]
        spikes = [torch.empty(T, N, n, dtype=dtype, device=device) for n in sizes[1:-1]]
    state = ADMMState(weights, pots, spikes, torch.zeros(N, sizes[-1], dtype=dtype, device=device), 0)
    if settings.init != "uniform":
        _forward_states(state, frames, problem, settings)
        S.parallel_output(state, frames, y, settings, cache or S.SolverCache(), generator, start=True)
    return state


# ----------------------------------------------------------------------------------------------------
# The hidden blocks
# ----------------------------------------------------------------------------------------------------

def effective_matrix(layer, W: torch.Tensor) -> torch.Tensor:
    """The matrix (n_out, n_in) of a dense layer's operator a ↦ W flatten(pool(a)): W P, its rows the
    pooling's adjoint applied to W's rows (W itself without pooling)."""
    if layer.pool_size == 1 or len(layer.in_shape) != 3:
        return W
    rows = W.reshape((W.shape[0],) + tuple(layer.pooled_shape))
    full = CV.pool_adjoint(rows, layer.pool_size, (W.shape[0],) + tuple(layer.in_shape), layer.pool_mode)
    return full.reshape(W.shape[0], -1)


def normal_operator(layer, W: torch.Tensor):
    """v ↦ AᵀA v for the conv layer ``layer`` with kernel W (v: (B, C_in, H, W) spikes of the layer below)."""
    s, p, q, mode = layer.stride, layer.padding, layer.pool_size, layer.pool_mode

    def apply(v):
        return CV.conv_adjoint(CV.conv_forward(v, W, s, p, q, mode), W, tuple(v.shape), s, p, q, mode)

    return apply


def spike_rhs_conv(layer_next, W_next, c, d_next, h, theta, rho_own, rho_next, beta) -> torch.Tensor:
    """The spike block's right-hand sides when layer l feeds the conv layer ``layer_next`` (all t, flat):

        t < T:  b_t = ρ_{l+1} Aᵀ c_t − ρ_l θ d_{t+1} + β h(z_{l,t})
        t = T:  b_T = ρ_{l+1} Aᵀ c_T + β h(z_{l,T})
    with c = x_{l+1} the next layer's targets and d_{t+1} = z_{l,t+1} − δ z_{l,t} − u_{l,t+1}: the dense
    :func:`updates.spike_rhs` with Wᵀc replaced by the adjoint Aᵀc (conv.conv_adjoint)."""
    T, N = c.shape[0], c.shape[1]
    shape = (T * N,) + tuple(layer_next.in_shape)
    g = c.reshape((T * N,) + tuple(layer_next.out_shape))
    At_c = CV.conv_adjoint(g, W_next, shape, layer_next.stride, layer_next.padding, layer_next.pool_size,
                           layer_next.pool_mode).reshape(T, N, -1)
    rhs = rho_next * At_c + beta * h
    rhs[:-1] -= (rho_own * theta) * d_next[:-1]
    return rhs


def update_spikes(state: ADMMState, frames, problem: ConvProblem, settings: ADMMSettings, l: int,
                  u: torch.Tensor, cache: S.SolverCache | None = None) -> None:
    """a_l for all t, the exact minimiser of its block (given everything else), u = A_l a_{l-1}:

        t < T:  (ρ_{l+1} AᵀA + (ρ_l θ² + β) I) a_t = b_t,    t = T:  (ρ_{l+1} AᵀA + β I) a_T = b_T [+ W_Lᵀλ]
    with A the next layer's operator. Next layer dense: A = W_{l+1} P (:func:`effective_matrix`) and the
    dense block as it is (:func:`updates.spike_matrices`, :func:`updates.spike_rhs`,
    :func:`updates.solve_spikes`, any spike solver). Next layer conv: b by :func:`spike_rhs_conv`, the
    systems divided by ρ_{l+1} and solved either exactly through the pooled space
    (:func:`conv.pooled_factors`, :func:`conv.pooled_solve`) or by CG (:func:`conv.solve_spikes_cg`) from
    the current spikes to the relative residual ``problem.cg_tol`` per (t, sample), as
    :meth:`ConvProblem.spike_method` says; then clipped to [0, 1] unless the spike solver is "free".
    The rate penalty γ Σ a shifts b by −γ. ``cache.reduce`` (data-parallel: a sum over processes) makes
    every process run CG until every row of every process has converged, as one process on all the
    samples does; the direct solve needs no reduction (every process factors the same matrix)."""
    delta, theta = settings.delta, settings.theta
    nxt, W_next = problem.net[l + 1], state.weights[l + 1]
    dual_next = l + 1 == state.n_layers - 1
    rho_l, beta_l = P.layer_penalties(state, settings, l)
    rho_next = settings.output_rho if dual_next else P.layer_penalties(state, settings, l + 1)[0]
    z = state.potentials[l]
    d_next = torch.empty_like(z)
    torch.sub(z[1:], delta * z[:-1], out=d_next[:-1])
    d_next[:-1] -= u[1:]
    d_next[-1] = 0
    c = S._next_targets(state, l, slice(None), delta, theta)
    h = heaviside(z, theta)
    if nxt.kind == "dense":
        W_eff = effective_matrix(nxt, W_next)
        if U.low_rank(W_eff.shape, beta_l, settings.spike_solver):  # k×k factors: no (C·H·W)² matrix
            M_inner = M_last = None
            factors = U.woodbury_factors(W_eff, theta, rho_l, rho_next, beta_l)
        else:
            M_inner, M_last = U.spike_matrices(W_eff, theta, rho_l, rho_next, beta_l)
            factors = (U.cholesky(M_inner, "spike-update matrix"), U.cholesky(M_last, "spike-update matrix"))
        rhs = U.spike_rhs(W_eff, c, d_next, h, theta, rho_l, rho_next, beta_l, state.dual if dual_next else None)
        SP.rate_rhs(rhs, settings.rate_penalty)
        state.spikes[l].copy_(U.solve_spikes(M_inner, M_last, rhs, settings.spike_solver, settings.box_iterations,
                                             factors))
        return
    rhs = spike_rhs_conv(nxt, W_next, c, d_next, h, theta, rho_l, rho_next, beta_l)
    SP.rate_rhs(rhs, settings.rate_penalty)
    del c, d_next, h
    T, N = z.shape[0], z.shape[1]
    img = tuple(nxt.in_shape)
    a = state.spikes[l]
    systems = ((slice(0, T - 1), (rho_l * theta ** 2 + beta_l) / rho_next), (slice(T - 1, T), beta_l / rho_next))
    direct = problem.spike_method(l) == "direct"
    if direct:
        factors = CV.pooled_factors(W_next, tuple(nxt.pooled_shape), nxt.stride, nxt.padding, nxt.pool_size,
                                    nxt.pool_mode, tuple(diag for _, diag in systems))
        problem.cg_log.pop(l, None)
    else:
        op = normal_operator(nxt, W_next)
    log = []
    for which, (rows, diag) in enumerate(systems):
        n_t = rows.stop - rows.start
        if n_t == 0:
            continue
        b = rhs[rows].reshape((n_t * N,) + img) / rho_next
        if direct:
            sol = CV.pooled_solve(factors, b, which).reshape(n_t, N, -1)
        else:
            x0 = a[rows].reshape((n_t * N,) + img)
            res = CV.solve_spikes_cg(b, op, diag, x0=x0, tol=problem.cg_tol,
                                     max_iterations=problem.cg_max_iterations,
                                     reduce=cache.reduce if cache is not None else None)
            sol = res.x.reshape(n_t, N, -1)
            log.append((res.iterations, res.relative_residual))
        if settings.spike_solver != "free":
            sol = sol.clamp(0.0, 1.0)
        a[rows] = sol
    if not direct:
        problem.cg_log[l] = log


def weight_sums(layer, inputs: torch.Tensor, x: torch.Tensor, dtype, rows: int = PATCH_ELEMENTS,
                gram: bool = True, cross_dtype=None):
    """(G, C) of layer l's weight block over every time step and sample, in ``dtype``:

        conv:   G = Σ_{t,samples} P_tᵀ P_t,  C = Σ X_tᵀ P_t   (P_t the patches of pool(a_{l-1,t}), X_t the targets)
        dense:  G = Σ p_t p_tᵀ,  C = Σ x_t p_tᵀ  with p_t = flatten(pool(a_{l-1,t})) (updates.weight_statistics)
    ``inputs`` (T, N, n_{l-1}) flat, ``x`` (T, N, n_l) the targets. Conv sums are formed over blocks of
    (t, sample) images whose patches hold about ``rows`` numbers. ``gram`` False (a conv layer): G is None
    and only C is formed. ``cross_dtype``: the dtype of a conv layer's cross products (default x's; the
    settings' ``cross_dtype``), each block's targets converted to it."""
    if layer.kind == "dense":
        pooled = layer.pooled(inputs).reshape(x.shape[0], x.shape[1], -1)
        return U.weight_statistics(pooled, x, dtype)
    a = layer.spatial(inputs)
    X = x.reshape((-1,) + tuple(layer.out_shape))
    per_image = layer.out_shape[1] * layer.out_shape[2] * layer.in_shape[0] * layer.kernel ** 2
    step = max(1, rows // max(per_image, 1))
    G = C = None
    for s in range(0, a.shape[0], step):
        x_block = X[s:s + step] if cross_dtype is None else X[s:s + step].to(cross_dtype)
        g, c = CV.patch_sums(a[s:s + step], x_block, layer.kernel, layer.stride, layer.padding,
                             layer.pool_size, layer.pool_mode, dtype, gram)
        C = c if C is None else C.add_(c)
        if gram:
            G = g if G is None else G.add_(g)
    return G, C


def update_weights(state: ADMMState, frames, problem: ConvProblem, settings: ADMMSettings,
                   cache: S.SolverCache, l: int, x: torch.Tensor | None = None) -> None:
    """W_l ← the exact minimiser of (ρ_l/2) Σ_t ‖x_{l,t} − A_l(W) a_{l-1,t}‖² + (ρ_l μ/2) ‖W − W₀‖², μ =
    ridge·tr G/n, W₀ = W_l (proximal) or 0: W_flat = (C + μ W₀)(G + μI)^{-1} with the sums of
    :func:`weight_sums` (conv.solve_conv_weights; updates.solve_weights for a dense layer). ``x``: the
    targets (default the Lagrangian's x_{l,t} = z_{l,t} − δ z_{l,t-1} + θ a_{l,t-1}). A layer not yet
    grown (:func:`solver.frozen`) keeps its weights."""
    if S.frozen(state, settings, l):
        return
    layer = problem.net[l]
    if x is None:
        x = U.targets(state.potentials[l], state.spikes[l], settings.delta, settings.theta)
    W_old = state.weights[l]
    inputs = state.layer_inputs(frames, l).to(W_old.dtype)
    # the first conv layer's patch Gram Σ PᵀP is that of the frames: formed once and kept in the cache
    # (solver.forget_inputs drops it with the frames' other derived sums)
    keep = l == 0 and layer.kind == "conv"
    G_kept = cache.extra.get(INPUT_PATCH_GRAM) if keep else None
    G, C = weight_sums(layer, inputs, x, S.DTYPES[settings.gram_dtype], gram=G_kept is None,
                       cross_dtype=S.DTYPES[settings.cross_product_dtype])
    G, C = (G_kept if G_kept is not None else cache.reduce(G)), cache.reduce(C)
    if keep:
        cache.extra[INPUT_PATCH_GRAM] = G
    anchor = W_old if settings.proximal else None
    if layer.kind == "conv":
        W = CV.solve_conv_weights(G, C, tuple(W_old.shape), settings.ridge, anchor)
    else:
        W, _ = U.solve_weights(G, C, settings.ridge, None, anchor)
    state.weights[l] = W.to(W_old.dtype)


def parallel_hidden(state: ADMMState, frames, y, problem: ConvProblem, settings: ADMMSettings,
                    cache: S.SolverCache) -> None:
    """Hidden layers from the top down, each: spikes (all t, :func:`update_spikes`), potentials red-black
    in time (the dense :func:`solver.update_potentials_red_black`: element-wise, exact), then the weights
    (:func:`update_weights`, with the gated targets of ``settings.target_gate`` as in the dense solver)."""
    for l in reversed(range(state.n_layers - 1)):
        W = state.weights[l]
        u = problem.net[l].current(state.layer_inputs(frames, l).to(W.dtype), W)
        learn = not S.frozen(state, settings, l)
        gate = settings.target_gate > 0 and learn
        if gate:
            a_fwd, z_fwd = state.spikes[l].clone(), state.potentials[l].clone()
        update_spikes(state, frames, problem, settings, l, u, cache)
        x = U.gated_targets(u, a_fwd, state.spikes[l], z_fwd, settings.theta, settings.target_gate) if gate else None
        # element-wise and separable over samples: in cache-sized blocks of samples (the same values)
        T, N, width = u.shape
        for sl in S._chunks(N, S.block_size(N, T, width, settings, u.device)):
            S.update_potentials_red_black(state, frames, settings, l, sl=sl, u=u[:, sl])
        del u
        if learn:
            update_weights(state, frames, problem, settings, cache, l, x)


def iterate(state: ADMMState, frames, y, problem: ConvProblem, settings: ADMMSettings, cache: S.SolverCache,
            generator: torch.Generator, redraw=None) -> None:
    """One ADMM iteration in place, as :func:`solver.iterate` with the parallel schedule: the hidden sweep
    (:func:`parallel_hidden`), the settings' weight step W_prev + η (W* − W_prev) (with momentum), the
    re-projection every ``reproject`` iterations, the dense output block on the flattened last hidden
    spikes (:func:`solver.parallel_output`), the dual step λ ← λ + ρ_L (z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T})
    after the warm-up; checks for divergence. Every layer trains from the first iteration (no growth:
    ``grow_every`` is for dense networks, whose deep layers start as identity copies).

    ``redraw``: called just before the re-projection (data augmentation, as in :func:`solver.iterate`); it
    replaces ``frames`` in place by a new draw and drops what the cache derived from the old one, so the
    re-projection, the output block and the next iteration's blocks all see the new frames."""
    check_settings(problem, settings)
    # no growth: every layer of a conv network starts at random (conv_network.init_weights), so a layer
    # kept at its start would be a frozen random layer, not an identity copy (grow_every: dense only)
    settings = settings.replace(grow_every=0)
    frames = flat(frames, problem)
    stepping = settings.steps_hidden_weights
    previous = [w.clone() for w in state.weights[:-1]] if stepping else None
    parallel_hidden(state, frames, y, problem, settings, cache)
    if stepping:
        S.take_weight_step(state, previous, settings)
    if settings.reproject and (state.iteration + 1) % settings.reproject == 0:
        if redraw is not None:
            redraw()
        reproject(state, frames, problem, settings)
    S.parallel_output(state, frames, y, settings, cache, generator)
    if settings.dual and state.iteration >= settings.warmup:
        S.update_dual(state, frames, settings)
    state.iteration += 1
    U.check_all_finite([(w, f"weights of layer {l + 1}") for l, w in enumerate(state.weights)]
                       + [(state.potentials[-1], "output potentials"), (state.dual, "dual")], state.iteration)


def predict(state_or_weights, frames, problem: ConvProblem, settings: ADMMSettings) -> torch.Tensor:
    """argmax z_{L,T} of the forward simulation of the weights (a state's or a list)."""
    weights = state_or_weights.weights if isinstance(state_or_weights, ADMMState) else state_or_weights
    return CN.predict(problem.net, problem.input_shape, weights, frames, settings.lif)
