"""One ADMM iteration, in the paper's sequential order or in the exact parallel schedule (spec §3-4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import SettingsError
from ..network import heaviside, leaky_recurrence, lif_recurrence
from . import gram as GR
from . import sparse_inputs as SI
from . import sparsity as SP
from . import anderson as AA
from . import penalties as P
from . import updates as U
from .settings import ADMMSettings
from .state import ADMMState, calibrate_rates, identity_layers, random_weights, uniform_state

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SolverCache:
    """Factorisations that stay valid across iterations: the input layer's Gram factor (the input Gram
    never changes) and the output system of the joint output solve."""

    input_gram: torch.Tensor | None = None
    input_gram_factor: torch.Tensor | None = None
    input_mu: torch.Tensor | None = None
    """μ of the input layer's ridge (computed once from the fixed input Gram)."""
    frames_integer_max: int | None = None
    """The frames' largest value if they hold integers in [0, 255] (then the input Gram is formed
    exactly by float32 products, admm/gram.py), -1 if not; None until checked."""
    paths: dict = field(default_factory=dict)
    """Which kernel each kind of product took in this run (``input_gram``, ``input_currents``,
    ``input_cross_sums``, ``cross_sums``), for reports such as ``admm-snn bench``."""
    output_system: tuple | None = None
    reduce: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda t: t)
    """Sums a tensor over every process (identity in one process; an all-reduce in data-parallel runs)."""
    extra: dict = field(default_factory=dict)


def _converted(cache: "SolverCache | None", key: str, x: torch.Tensor, dtype) -> torch.Tensor:
    """``x.to(dtype)``; on CPU into a buffer kept in the cache and reused every iteration (a fresh
    tensor of this size is mapped from the kernel page by page each time, which costs several times the
    conversion itself; accelerators' caching allocators reuse blocks anyway)."""
    if x.dtype == dtype:
        return x
    if cache is None or x.device.type != "cpu":
        return x.to(dtype)
    b = cache.extra.get(("buffer", key))
    if b is None or b.dtype != dtype or b.numel() < x.numel():
        cache.extra.pop(("buffer", key), None)
        b = torch.empty(x.numel(), dtype=dtype)
        cache.extra[("buffer", key)] = b
    out = b[:x.numel()].view(x.shape)
    out.copy_(x)
    return out


CALIBRATION_SAMPLES = 2000
"""Samples on which ``init_rate`` calibrates the initial weight scale (:func:`calibration_indices`): the
rate of 2,000 samples' spikes pins the scale as well as all samples' do (a bisection over a monotone
rate), at a fraction of the start's cost for large N (13,620 MNIST images: 6.9 s for all, under 1 s)."""


def calibration_indices(n_total: int, n_local: int | None = None, start: int = 0,
                        k: int | None = None) -> torch.Tensor | None:
    """The samples of the rate calibration among ``n_total``: i·n_total // k for i < k (default
    :data:`CALIBRATION_SAMPLES`; evenly spaced, no random draw), as indices into this process's samples
    ``start .. start + n_local`` (None: every sample, when n_total ≤ k). The same global set for any
    split over processes, so a data-parallel start is the single-process one."""
    k = CALIBRATION_SAMPLES if k is None else k
    if n_total <= k:
        return None
    n_local = n_total if n_local is None else n_local
    idx = torch.arange(k, dtype=torch.int64) * n_total // k
    return idx[(idx >= start) & (idx < start + n_local)] - start


def init_state(frames: torch.Tensor, y: torch.Tensor, sizes: list[int], settings: ADMMSettings,
               generator: torch.Generator, cache: "SolverCache | None" = None,
               rate_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
               shard: tuple[int, int] | None = None) -> ADMMState:
    """The starting point: ``init="uniform"`` is the paper's (W = 0, z and a uniform in [0, 1), λ = 0);
    ``init="forward"`` draws random weights, takes the states of their forward simulation and (parallel
    schedule) fits the output block to them, so the first sweep already sees the output's error.
    ``rate_reduce`` sums the rate calibration's spike counts over processes (default: ``cache.reduce``;
    federated clients pass an all-reduce of these two numbers while their cache shares nothing).
    ``shard`` = (start, n_total): these frames are samples start.. of n_total (data-parallel), so that
    the calibration uses the same samples (:func:`calibration_indices`) as one process on all of them."""
    dtype, device = DTYPES[settings.dtype], frames.device
    T, N = frames.shape[0], frames.shape[1]
    if settings.init == "uniform":
        weights = [torch.zeros(sizes[l], sizes[l - 1], dtype=dtype, device=device) for l in range(1, len(sizes))]
        pots, spikes = uniform_state(sizes, T, N, generator, dtype, device)
    else:
        weights = random_weights(sizes, settings.init_gain, generator, dtype, device)
        identity = settings.deep_init == "identity"
        if identity:
            weights = identity_layers(weights, settings.theta * settings.identity_gain, settings.identity_noise,
                                      generator)
        if settings.init_rate is not None:
            # with identity layers only the first hidden layer is calibrated (the others copy it)
            calibrated = [weights[0], weights[-1]] if identity else weights
            start, n_total = shard if shard is not None else (0, N)
            sample = calibration_indices(n_total, N, start)
            calibrated = calibrate_rates(calibrated, frames if sample is None else frames[:, sample.to(device)],
                                         settings.lif, settings.init_rate,
                                         reduce=rate_reduce or (cache or SolverCache()).reduce,
                                         chunk=block_size(N, T, max(sizes[1:]), settings, device, max(sizes[:-1])))
            weights = [calibrated[0], *weights[1:]] if identity else calibrated
        pots = [torch.empty(T, N, n, dtype=dtype, device=device) for n in sizes[1:]]
        spikes = [torch.empty(T, N, n, dtype=dtype, device=device) for n in sizes[1:-1]]
    dual = torch.zeros(N, sizes[-1], dtype=dtype, device=device)
    state = ADMMState(weights, pots, spikes, dual, 0)
    if settings.init != "uniform":
        _forward_states(state, frames, settings, cache)
    if settings.init == "forward" and settings.order != "paper":
        parallel_output(state, frames, y, settings, cache or SolverCache(), generator, start=True)
    return state


def _forward_states(state: ADMMState, frames, settings: ADMMSettings, cache: "SolverCache | None") -> None:
    """Every potential and spike of the forward simulation of the state's weights: the hidden layers by
    :func:`reproject` (block by block, the input currents from the frames' CSR form when the products
    use it, kept for the first sweep like every later re-projection's), then the output layer's leaky
    integration z_{L,t} = δ z_{L,t-1} + W_L a_{L-1,t}."""
    reproject(state, frames, settings, cache)
    W = state.weights[-1]
    for sl in _blocks(state, frames, settings):
        u = state.layer_inputs(frames, state.n_layers - 1)[:, sl].to(W.dtype) @ W.T
        state.potentials[-1][:, sl] = leaky_recurrence(u, settings.lif)


def _chunks(N: int, size: int | None):
    size = size or N
    for s in range(0, N, size):
        yield slice(s, min(s + size, N))


CPU_BLOCK_ELEMENTS = 1 << 20
"""On CPU, per-sample updates run on blocks of samples whose state-shaped temporaries (T × samples ×
width) hold about this many numbers (4 MiB in float32), so that the element-wise work of the spike and
potential updates runs from cache instead of from main memory (measured 1.5-2x faster on the 2-core
development machine); matrix products over T·samples ≥ 2000 rows stay efficient. Accelerators use whole
chunks (fewer, larger kernels)."""


CPU_BLOCK_INPUTS = 1 << 22
"""... and whose converted inputs (T × samples × inputs) hold at most this many numbers (the converted
block of N-MNIST frames then takes 16 MiB in float32 and 32 MiB in float64)."""


def block_size(N: int, T: int, width: int, settings: ADMMSettings, device, n_inputs: int = 0) -> int:
    """Samples per block of the per-sample updates: ``settings.chunk_size`` (None: all N), and on CPU at
    most what keeps a (T, block, width) temporary near :data:`CPU_BLOCK_ELEMENTS` numbers and the
    block's converted inputs within :data:`CPU_BLOCK_INPUTS` (at least 16 samples). Samples are
    independent given the weights, so the blocking changes no result beyond the order in which the
    weight sums are added."""
    size = min(settings.chunk_size or N, N)
    if torch.device(device).type == "cpu":
        cap = CPU_BLOCK_ELEMENTS // max(1, T * width)
        if n_inputs:
            cap = min(cap, CPU_BLOCK_INPUTS // max(1, T * n_inputs))
        size = min(size, max(16, cap))
    return max(1, size)


def _blocks(state: ADMMState, frames, settings: ADMMSettings):
    """Slices of samples for the per-sample updates (see :func:`block_size`)."""
    T, N = frames.shape[0], frames.shape[1]
    width = max(w.shape[0] for w in state.weights)
    n_in = max(w.shape[1] for w in state.weights)
    return _chunks(N, block_size(N, T, width, settings, frames.device, n_in))


def _keeps_currents(settings: ADMMSettings, N: int) -> bool:
    """Re-projection keeps the hidden layers' input currents for the next sweep when the run does not
    bound its memory by chunking (it costs one state-sized tensor per hidden layer)."""
    return bool(settings.reproject) and (not settings.chunk_size or settings.chunk_size >= N)


def _next_targets(state: ADMMState, l: int, sl, delta, theta):
    """c = x_{l+1,t} for the samples ``sl``: the targets of the layer above layer l."""
    hidden_next = l + 1 < state.n_layers - 1
    return U.targets(state.potentials[l + 1][:, sl], state.spikes[l + 1][:, sl] if hidden_next else None,
                     delta, theta)


def input_gram(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache) -> torch.Tensor:
    """G_0 = Σ_t Σ_samples a_{0,t} a_{0,t}ᵀ over this process's samples (not reduced), in the gram dtype:
    exactly, by the float32 kernel that :func:`gram.kernel` picks from the frames' values and density
    (the sparse one from the blocks' CSR form when the input products use it), block by block."""
    gdt = DTYPES[settings.gram_dtype]
    if cache.frames_integer_max is None:
        top = GR.frames_integer_max(frames)
        cache.frames_integer_max = -1 if top is None else top
    top = None if cache.frames_integer_max < 0 else cache.frames_integer_max
    kind = GR.kernel(top, SI.density(frames, cache))
    cache.paths["input_gram"] = kind
    acc = GR.ExactGram(frames.shape[2], top, kind, frames.device, gdt)
    T = frames.shape[0]
    reuse = kind == "sparse-float32" and SI.enabled(settings, frames, cache)
    for sl in _blocks(state, frames, settings):
        rows = frames[:, sl].reshape(T * (sl.stop - sl.start), -1)
        if kind != "sparse-float32":
            acc.add_dense(rows)
            continue
        pieces = SI.block(cache, frames, sl, settings).transposed_pieces(torch.float32) if reuse \
            else [(0, rows.shape[0], SI.transposed_csr(rows, torch.float32))]
        for r0, r1, csr_t in pieces:
            acc.add_sparse(rows[r0:r1], csr_t)
    return acc.total()


def prepare_input_gram(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache) -> None:
    """G_0 (reduced over processes) formed now if it is not known yet: the trainers call this at the
    start, so that the product over every frame, which the first weight update of the input layer
    needs, is part of the start (with the frames' CSR form) instead of making the first iteration the
    slowest."""
    if cache.input_gram is None:
        cache.input_gram = cache.reduce(input_gram(state, frames, settings, cache))


def group_input_grams(state: ADMMState, frames, groups: torch.Tensor, n_groups: int, settings: ADMMSettings,
                      like: torch.Tensor) -> list[torch.Tensor]:
    """G_g = Σ_t Σ_{i: groups_i = g} a_{0,t,i} a_{0,t,i}ᵀ for g = 0..n_groups−1 (this process's samples, not
    reduced): :func:`input_gram` of each group's frames, taken from ``frames`` and converted to ``like``'s
    dtype and device one group at a time, each with its own cache (the run's cache keeps the CSR form
    of the whole frames). With integer-valued frames every entry is an exact integer, so Σ_g G_g (added
    in the gram dtype) is bitwise the Gram of all frames; a G_g whose entries are all float32 numbers is
    kept in float32 (half the memory, the same values)."""
    out = []
    for g in range(int(n_groups)):
        idx = (groups == g).nonzero().flatten()
        sub = frames[:, idx].to(device=like.device, dtype=like.dtype)
        if idx.numel() == 0:
            n = frames.shape[2]
            out.append(torch.zeros(n, n, dtype=torch.float32, device=like.device))
            continue
        G = input_gram(state, sub, settings, SolverCache())
        del sub
        narrow = G.to(torch.float32)  # kept in float32 where that is exact (integer counts below 2^24)
        out.append(narrow if G.dtype != torch.float32 and torch.equal(narrow.to(G.dtype), G) else G)
        del G, narrow
    return out


def _weight_sums(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache, l: int, sl,
                 inputs: torch.Tensor | None = None, x: torch.Tensor | None = None):
    """(G, C) of W_l's update over the samples ``sl`` (G None for the input layer once its Gram is known).
    ``inputs``: the chunk's a_{l-1}, if the caller already has it; ``x``: the targets (default: the
    Lagrangian's x of the state, :func:`updates.targets`)."""
    gdt, cdt = DTYPES[settings.gram_dtype], DTYPES[settings.cross_product_dtype]
    out = l == state.n_layers - 1
    first = l == 0
    if inputs is None:
        inputs = state.layer_inputs(frames, l)[:, sl]
    if x is None:
        x = U.targets(state.potentials[l][:, sl], None if out else state.spikes[l][:, sl], settings.delta,
                      settings.theta)
    gram = not first  # the input layer's fixed Gram: input_gram, once per run
    if first and not out and SI.enabled(settings, frames, cache):  # C from the frames' CSR form
        cache.paths["input_cross_sums"] = f"sparse CSR, {settings.cross_product_dtype} pieces"
        g, c = None, SI.block(cache, frames, sl, settings).cross_sum(x, cdt, gdt)
    else:
        cache.paths["input_cross_sums" if first else "cross_sums"] = \
            f"dense, {settings.cross_product_dtype}{' pieces' if cdt != gdt else ''}"
        # the conversions in buffers reused every iteration: one for the Gram (gdt), one for the products
        # of the cross sums (cdt; the state dtype's buffer "inputs" is the one the input products use)
        gram_inputs = _converted(cache, "inputs-gram", inputs, gdt) if gram or cdt == gdt else None
        cross_inputs = gram_inputs if cdt == gdt else \
            _converted(cache, "inputs" if cdt == state.potentials[l].dtype else "inputs-cross", inputs, cdt)
        g, c = U.weight_statistics(cross_inputs, x, gdt, state.dual[sl] if out else None, settings.output_rho,
                                   gram=gram, cross_dtype=cdt, gram_inputs=gram_inputs)
    return g, c


def _add(acc, g, c):
    if acc is None:
        return [g, c]
    if g is not None:
        acc[0] = g if acc[0] is None else acc[0].add_(g)
    acc[1].add_(c)
    return acc


def layer_weight_sums(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache, l: int):
    """(G, C) of W_l's update summed over this process's samples, block by block (not reduced)."""
    acc = None
    for sl in _blocks(state, frames, settings):
        acc = _add(acc, *_weight_sums(state, frames, settings, cache, l, sl))
    return acc


def frozen(state: ADMMState, settings: ADMMSettings, l: int) -> bool:
    """Layer-by-layer growth (``grow_every`` = K > 0): in iteration i (0-based) only the first
    1 + i // K hidden layers are trained; the layers above them keep their (identity) start weights, so
    the network computes what its trained lower layers compute, and a layer is "inserted" on top of
    them every K iterations. The output layer is always trained."""
    return grown_layers(state, settings) <= l < state.n_layers - 1


def update_weights(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache, l: int,
                   stats=None) -> None:
    """W_l ← exact least-squares minimiser, from the sums over chunks of samples (§3 step 1).

    ``stats`` = (G, C) summed over every local sample by the caller (the parallel schedule forms them
    while it updates the states chunk by chunk); None: formed here. A layer not yet grown
    (:func:`frozen`) keeps its weights."""
    if frozen(state, settings, l):
        return
    L = state.n_layers
    out = l == L - 1
    first = l == 0
    G, C = stats if stats is not None else layer_weight_sums(state, frames, settings, cache, l)
    C = cache.reduce(C)
    if first and cache.input_gram is None:
        cache.input_gram = cache.reduce(input_gram(state, frames, settings, cache))
    elif not first:
        G = cache.reduce(G)
    anchor = state.weights[l] if (settings.proximal and not out) else None
    ridge = settings.output_ridge if out else settings.ridge
    if first and cache.input_mu is None:
        cache.input_mu = U.ridge_tensor(cache.input_gram, ridge)
    # the layer's penalty: ρ_L, or ρ_l (per layer when adapted), against which the L1 split's κ_l weighs
    rho_l = settings.output_rho if out else P.layer_penalties(state, settings, l)[0]
    if SP.active(state, settings, l):  # the L1 split's frozen κ_l (sparsity.kappa)
        SP.kappa(state, settings, l, cache.input_gram if first else G, rho_l)
    if SP.in_block(state, settings, l):  # the L1 split adds (κ/2)‖W − V + U‖² (sparsity.split_weight_update)
        W = SP.split_weight_update(state, settings, cache, l, cache.input_gram if first else G, C, ridge, anchor,
                                   rho_l, cache.input_mu if first else None)
    elif first:
        W, factor = U.solve_weights(cache.input_gram, C, ridge, cache.input_gram_factor, anchor, mu=cache.input_mu)
        cache.input_gram_factor = factor
    else:
        W, _ = U.solve_weights(G, C, ridge, None, anchor)
    state.weights[l] = W.to(state.weights[l].dtype)


def _spike_setup(state, l, settings, low_rank_ok: bool = True):
    """(W_{l+1}, (ρ_l, ρ_{l+1}), M_inner, M_last, factors, whether l+1 is the output) of layer l's spike
    block: the n×n matrices and their Cholesky factors, or, where the next layer is less than half as
    wide (:func:`updates.low_rank`, and ``low_rank_ok``), no matrices and :class:`updates.WoodburyFactors`."""
    W_next = state.weights[l + 1]
    dual_next = l + 1 == state.n_layers - 1
    rho_l, beta_l = P.layer_penalties(state, settings, l)  # ρ_l, β_l (per layer when adapted)
    rhos = (rho_l, settings.output_rho if dual_next else P.layer_penalties(state, settings, l + 1)[0])
    if low_rank_ok and U.low_rank(W_next.shape, beta_l, settings.spike_solver):  # k×k factors, no n×n matrices
        return W_next, rhos, None, None, U.woodbury_factors(W_next, settings.theta, *rhos, beta_l), dual_next
    M_inner, M_last = U.spike_matrices(W_next, settings.theta, rhos[0], rhos[1], beta_l)
    factors = (U.cholesky(M_inner, "spike-update matrix"), U.cholesky(M_last, "spike-update matrix"))
    return W_next, rhos, M_inner, M_last, factors, dual_next


def _layer_current(state: ADMMState, frames, l: int, sl, dtype, cache: SolverCache | None = None,
                   settings: ADMMSettings | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
    """u = W_l a_{l-1} for the samples ``sl`` (T, B, n_l). The input layer's from the frames' CSR form
    when :func:`sparse_inputs.enabled` (given a cache and the settings); otherwise a dense product with
    the inputs (``inputs``, or taken from the state) converted to ``dtype``, in the cache's reused buffer."""
    if l == 0 and settings is not None and SI.enabled(settings, frames, cache):
        cache.paths["input_currents"] = "sparse CSR"
        return SI.block(cache, frames, sl, settings).product(SI.transposed_weights(cache, state.weights[0]).to(dtype))
    if inputs is None:
        inputs = state.layer_inputs(frames, l)[:, sl]
    if l == 0 and cache is not None:
        cache.paths["input_currents"] = f"dense, {str(dtype).replace('torch.', '')}"
    return _converted(cache, "inputs", inputs, dtype) @ state.weights[l].T


def update_spikes_all_t(state: ADMMState, frames, settings: ADMMSettings, l: int, sl=None, u=None,
                        setup=None) -> None:
    """a_{l,t} for all t at once (one factorisation, T·N right-hand sides), exact given the rest.

    With ``sl``, only those samples (the parallel schedule passes its chunk, with ``u`` = W_l a_{l-1} of
    the chunk and ``setup`` = the factorisations, so that neither is formed twice)."""
    if setup is None:
        setup = _spike_setup(state, l, settings)
    if sl is None:
        for sl_ in _blocks(state, frames, settings):
            update_spikes_all_t(state, frames, settings, l, sl_, None, setup)
        return
    W_next, rhos, M_inner, M_last, factors, dual_next = setup
    delta, theta = settings.delta, settings.theta
    z = state.potentials[l][:, sl]
    if u is None:
        u = _layer_current(state, frames, l, sl, z.dtype)
    d_next = torch.empty_like(z)
    torch.sub(z[1:], delta * z[:-1], out=d_next[:-1])
    d_next[:-1] -= u[1:]
    d_next[-1] = 0
    c = _next_targets(state, l, sl, delta, theta)
    rhs = U.spike_rhs(W_next, c, d_next, heaviside(z, theta), theta, *rhos, P.layer_penalties(state, settings, l)[1],
                      state.dual[sl] if dual_next else None)
    SP.rate_rhs(rhs, settings.rate_penalty)  # firing-rate penalty γ Σ a: b − γ
    del c, d_next
    state.spikes[l][:, sl] = U.solve_spikes(M_inner, M_last, rhs, settings.spike_solver,
                                            settings.box_iterations, factors)


def update_potentials_red_black(state: ADMMState, frames, settings: ADMMSettings, l: int, sl=None,
                                u=None) -> None:
    """z_{l,t}: all even t, then all odd t (z_t shares terms only with z_{t±1}: an exact block update).

    With ``sl`` (and optionally ``u`` = W_l a_{l-1} of those samples), only those samples."""
    if sl is None:
        for sl_ in _blocks(state, frames, settings):
            update_potentials_red_black(state, frames, settings, l, sl_)
        return
    z = state.potentials[l][:, sl]  # a view: written in place
    a = state.spikes[l][:, sl]
    if u is None:
        u = _layer_current(state, frames, l, sl, z.dtype)
    rho_l, beta_l = P.layer_penalties(state, settings, l)
    for parity in (0, 1):
        z[parity::2] = U.update_potentials_parity(z, a, u, parity, settings.delta, settings.theta, rho_l, beta_l,
                                                  settings.eps)


def _leaky_sums(state: ADMMState, frames, settings: ADMMSettings, dtype) -> list[torch.Tensor]:
    """S = Σ_t δ^{T−t} a_{L-1,t} in ``dtype``, one (B, n) tensor per block of :func:`_blocks`."""
    a = state.layer_inputs(frames, state.n_layers - 1)
    return [U.leaky_sum(a[:, sl].to(dtype), settings.delta) for sl in _blocks(state, frames, settings)]


def update_output_joint_weights(state: ADMMState, frames, y, settings: ADMMSettings,
                                cache: SolverCache | None = None, leaky: list | None = None) -> None:
    """W_L by the exact joint minimisation over (W_L, z_L): ridge regression of y + λ/ρ on leaky sums
    (``leaky``: those sums in the gram dtype per block, if the caller has them; else formed here)."""
    gdt = DTYPES[settings.gram_dtype]
    G = C = None
    for i, sl in enumerate(_blocks(state, frames, settings)):
        if leaky is not None:
            g, c = U.joint_output_sums(leaky[i], y[sl], state.dual[sl], settings.output_rho)
        else:
            g, c = U.joint_output_statistics(state.layer_inputs(frames, state.n_layers - 1)[:, sl], y[sl],
                                             state.dual[sl], settings.delta, settings.output_rho, gdt)
        G, C = (g, c) if G is None else (G + g, C + c)
    if cache is not None:
        G, C = cache.reduce(G), cache.reduce(C)
    # μ_S of U.joint_output_ridge, as a device tensor (no wait for the device to report tr(G_S))
    mu_S = U.ridge_tensor(G, settings.output_ridge)
    if SP.in_block(state, settings, state.n_layers - 1):  # the L1 split of the output layer (sparsity.joint_output_split)
        k_S, C = SP.joint_output_split(state, settings, G, C, frames.shape[0])
        mu_S = mu_S + k_S
    factor = U.cholesky(U.plus_diagonal(G, mu_S), "output Gram matrix")
    W, _ = U.solve_weights(G, C, settings.output_ridge, factor)
    state.weights[-1] = W.to(state.weights[-1].dtype)


def update_output(state: ADMMState, frames, y, settings: ADMMSettings, cache: SolverCache) -> None:
    """Output potentials: the exact joint T×T solve, or red-black sweeps of the spec's step 4. ``y``: the
    targets (N, n_L), or (|𝒯|, N, n_L) with ``loss_steps`` > 1 (one per loss step)."""
    L = state.n_layers
    T = frames.shape[0]
    times = settings.loss_times(T)
    for sl in _blocks(state, frames, settings):
        u = state.layer_inputs(frames, L - 1)[:, sl].to(state.weights[-1].dtype) @ state.weights[-1].T
        if settings.output_solve in ("joint", "potentials"):
            if cache.output_system is None:
                cache.output_system = U.output_system(T, settings.delta, settings.output_rho, torch.float64,
                                                      u.device, times)
            state.potentials[-1][:, sl] = U.solve_output_potentials(
                u, y[sl] if times is None else y[:, sl], state.dual[sl], settings.delta, settings.output_rho,
                cache.output_system, times)
        else:
            z = state.potentials[-1][:, sl]
            for parity in (0, 1):
                t = torch.arange(parity, T, 2, device=u.device)
                z[t] = U.update_output_potentials_at(z, u, y[sl], state.dual[sl], t, settings.delta,
                                                     settings.output_rho)
            state.potentials[-1][:, sl] = z


def update_dual(state: ADMMState, frames, settings: ADMMSettings) -> None:
    """λ ← λ + ρ (z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T})."""
    L = state.n_layers
    for sl in _blocks(state, frames, settings):
        u_last = state.layer_inputs(frames, L - 1)[-1, sl].to(state.weights[-1].dtype) @ state.weights[-1].T
        state.dual[sl] = U.update_dual(state.dual[sl], state.potentials[-1][:, sl], u_last, settings.delta,
                                       settings.output_rho)


def parallel_hidden(state, frames, y, settings, cache, generator) -> None:
    """Hidden layers from the top down (the output's targets reach the first layer in one sweep); in
    each: spikes of all t in one solve, potentials red-black in time, then W_l from the new states
    (with ``order="paper"``: the layers in random order, each W_l first, then its states).

    Samples are separable given the weights, so each block of samples goes through spikes, potentials
    and its share of W_l's sums in turn (one product W_l a_{l-1} and one conversion of the block's
    inputs serve all three; the product is skipped when the re-projection kept it); W_l is solved once
    every block has been added. The result is the same as updating the spikes of every sample, then
    every potential, then the weights."""
    dtype = state.potentials[0].dtype
    paper = settings.order == "paper"  # random layer order, W_l first, then the layer's states
    layers = torch.randperm(state.n_layers - 1, generator=generator).tolist() if paper \
        else reversed(range(state.n_layers - 1))
    for l in layers:
        if paper:
            update_weights(state, frames, settings, cache, l)
        setup = _spike_setup(state, l, settings)
        kept = _take_current(state, frames, cache, l)
        acc = None
        for sl in _blocks(state, frames, settings):
            inputs = state.layer_inputs(frames, l)[:, sl]
            u = kept[:, sl] if kept is not None else _layer_current(state, frames, l, sl, dtype, cache, settings,
                                                                    inputs)
            learn = not paper and not frozen(state, settings, l)
            gate = settings.target_gate > 0 and learn
            if gate:  # the forward state the sweep starts from (settings.target_gate)
                a_fwd, z_fwd = state.spikes[l][:, sl].clone(), state.potentials[l][:, sl].clone()
            update_spikes_all_t(state, frames, settings, l, sl=sl, u=u, setup=setup)
            x = U.gated_targets(u, a_fwd, state.spikes[l][:, sl], z_fwd, settings.theta, settings.target_gate) \
                if gate else None
            update_potentials_red_black(state, frames, settings, l, sl=sl, u=u)
            del u
            if learn:
                acc = _add(acc, *_weight_sums(state, frames, settings, cache, l, sl, inputs, x))
        if not paper:
            update_weights(state, frames, settings, cache, l, stats=acc)


def readout_targets(state: ADMMState, frames, y: torch.Tensor, settings: ADMMSettings,
                    leaky: list | None = None) -> torch.Tensor:
    """τ = proj_M(W_L S − λ/ρ_L): the targets in the margin set M = {τ_y ≥ margin, τ_c ≤ 0 for c ≠ y}
    closest to what the current readout W_L makes of the hidden layer's leaky sums S = Σ_t δ^{T−t}
    a_{L-1,t} (:func:`updates.margin_targets`); per sample, so the same in every process. ``leaky``: S in
    the weights' dtype per block (:func:`_leaky_sums`), if the caller has them."""
    W = state.weights[-1]
    leaky = leaky if leaky is not None else _leaky_sums(state, frames, settings, W.dtype)
    out = torch.empty_like(y)
    for S_, sl in zip(leaky, _blocks(state, frames, settings)):
        z = S_ @ W.T - state.dual[sl].to(W.dtype) / settings.output_rho
        out[sl] = U.margin_targets(z, y[sl], settings.margin)
    return out


def parallel_output(state, frames, y, settings, cache, generator, start: bool = False, joint=None) -> None:
    """The output block: (W_L, z_L) jointly, or W_L then the potentials (settings.output_solve).

    With ``output_loss="hinge"`` the loss's targets τ are a block of their own, in the margin set:
    ``margin_rounds`` rounds of τ ← :func:`readout_targets` (exact given W_L) and W_L ← the joint
    minimiser given τ, which together minimise the readout's squared hinge
    Σ max(0, m − (W_L S)_y)² + Σ_{c≠y} max(0, (W_L S)_c)² + ridge (block coordinate descent of a jointly
    convex problem; tests/test_hinge.py), then the potentials given the last τ. At the ``start`` (a
    random readout) the first round's targets are y itself, a point of the margin set. ``joint``
    replaces :func:`update_output_joint_weights` (the federated consensus block)."""
    if settings.loss_steps > 1:
        if joint is not None:
            raise SettingsError("loss_steps > 1 is not supported by the federated consensus output block")
        multistep_output(state, frames, y, settings, cache, start)
        return
    joint = joint or (lambda *a, **k: update_output_joint_weights(*a, **k))
    hinge = settings.output_loss == "hinge"
    if settings.output_solve == "joint":
        rounds = settings.margin_rounds if hinge else 1
        targets = y
        # the hidden spikes do not change during the rounds: their leaky sums are formed once, in the
        # readout's dtype (targets) and in the gram dtype (joint sums)
        leaky = (_leaky_sums(state, frames, settings, state.weights[-1].dtype),
                 _leaky_sums(state, frames, settings, DTYPES[settings.gram_dtype])) if hinge else (None, None)
        for r in range(rounds):
            if hinge and not (start and r == 0):
                targets = readout_targets(state, frames, y, settings, leaky[0])
            joint(state, frames, targets, settings, cache, leaky=leaky[1])
    else:
        targets = readout_targets(state, frames, y, settings) if hinge and not start else y
        update_weights(state, frames, settings, cache, state.n_layers - 1)
    update_output(state, frames, targets, settings, cache)


def multistep_output(state, frames, y, settings, cache, start: bool = False) -> None:
    """The output block with the loss at the steps 𝒯 = ``settings.loss_times(T)`` (``loss_steps`` > 1), exact
    block coordinate descent of the jointly convex

        F(W_L, z_L, τ) = (ρ_L/2) Σ_t ‖z_t − δ z_{t-1} − W_L a_{L-1,t}‖² + Σ_{t∈𝒯} ‖z_t − τ_t‖² + (ρ_L μ/2)‖W_L‖²
    over τ (hinge: τ_t in the margin set, τ_t ← proj(z_t), separable and exact; square: τ_t = y) and over
    (W_L, z_L) jointly given τ: W_L by the generalised least squares of τ on the leaky sums S_t with the
    weighting Q of :func:`updates.loss_weighting` (the potentials eliminated), then z_L by the T×T solve
    with the loss at 𝒯 (:func:`update_output`). ``margin_rounds`` rounds; the first τ: y at the ``start``,
    else proj of the forward readout W_L S_t. Sums per block of samples, reduced through ``cache``."""
    T, L = frames.shape[0], state.n_layers
    times = settings.loss_times(T)
    gdt, wdt = DTYPES[settings.gram_dtype], state.weights[-1].dtype
    a = state.layer_inputs(frames, L - 1)
    blocks = list(_blocks(state, frames, settings))
    Lq = U.loss_weighting(T, settings.delta, settings.output_rho, times, gdt, a.device)
    sums = [U.leaky_sums_at(a[:, sl].to(gdt), settings.delta, times) for sl in blocks]
    white = [U.whitened(S_, Lq) for S_ in sums]
    hinge = settings.output_loss == "hinge"
    K, N = len(times), y.shape[0]
    y_t = y.unsqueeze(0).expand(K, N, y.shape[1])
    if hinge and not start:  # τ_t = proj(W_L S_t): the forward readout at every loss step
        W = state.weights[-1]
        tau = torch.cat([U.margin_targets(S_.to(wdt) @ W.T, y_t[:, sl], settings.margin)
                         for S_, sl in zip(sums, blocks)], dim=1)
    else:
        tau = y_t.clone()
    G = cache.reduce(sum(U.multistep_gram(w_) for w_ in white))
    rounds = settings.margin_rounds if hinge else 1
    for r in range(rounds):
        C = cache.reduce(sum(U.multistep_cross(w_, tau[:, sl], Lq) for w_, sl in zip(white, blocks)))
        W, _ = U.solve_weights(G, C, settings.output_ridge)
        state.weights[-1] = W.to(wdt)
        if hinge and r < rounds - 1:
            update_output(state, frames, tau, settings, cache)
            tau = U.margin_targets(state.potentials[-1][times].to(y.dtype), y_t, settings.margin)
    update_output(state, frames, tau, settings, cache)


def _time_order(T: int, generator: torch.Generator) -> list[int]:
    """A fresh random order of t = 1..T-1 (0-based 0..T-2), then t = T last."""
    return torch.randperm(T - 1, generator=generator).tolist() + [T - 1]


def _next_targets_at(state: ADMMState, l: int, t: int, delta, theta) -> torch.Tensor:
    """c_t = x_{l+1,t} (1, N, n_{l+1}) for one t: :func:`updates.targets` on the steps t-1..t only."""
    window = slice(max(t - 1, 0), t + 1)
    hidden_next = l + 1 < state.n_layers - 1
    return U.targets(state.potentials[l + 1][window], state.spikes[l + 1][window] if hidden_next else None,
                     delta, theta)[-1:]


def sequential_hidden(state, frames, y, settings, cache, generator) -> None:
    """One t at a time (random order of t < T, t = T last): spikes a_{l,t}, then potentials z_{l,t};
    each a single-time-step block, exact given the rest. The layer order and where W_l is updated
    follow ``settings.order``: "paper" — hidden layers in random order, W_l first (the paper's
    schedule); "top-down" — the parallel schedule's order (from the top layer down, W_l after the
    layer's states), so that the two schedules differ only in how the states are visited."""
    L, T = state.n_layers, frames.shape[0]
    delta, theta, eps = settings.delta, settings.theta, settings.eps
    paper = settings.order == "paper"
    steps = torch.arange(T, device=frames.device)  # index tensors sliced per t: no host-to-device copy per t
    layers = torch.randperm(L - 1, generator=generator).tolist() if paper else list(reversed(range(L - 1)))
    for l in layers:
        if paper:
            update_weights(state, frames, settings, cache, l)
        W_next, rhos, M_inner, M_last, factors, dual_next = _spike_setup(state, l, settings, low_rank_ok=False)
        rho_l, beta_l = P.layer_penalties(state, settings, l)
        z, a = state.potentials[l], state.spikes[l]
        u = _current_all(state, frames, l, settings, cache)
        for t in _time_order(T, generator):
            last = t == T - 1
            c = _next_targets_at(state, l, t, delta, theta)
            d1 = torch.zeros_like(z[t:t + 1]) if last else z[t + 1:t + 2] - delta * z[t:t + 1] - u[t + 1:t + 2]
            rhs = U.spike_rhs(W_next, c, d1, heaviside(z[t:t + 1], theta), theta, *rhos, beta_l,
                              state.dual if (dual_next and last) else None, includes_last=last)
            SP.rate_rhs(rhs, settings.rate_penalty)
            if last:
                a[t] = U.solve_spikes(M_inner, M_last, rhs, settings.spike_solver, settings.box_iterations,
                                      factors)[0]
            else:  # a single t < T row: solve with the inner matrix only
                sol = torch.cholesky_solve(rhs[0].T, factors[0]).T
                if settings.spike_solver != "free":
                    sol = sol.clamp(0.0, 1.0)
                if settings.spike_solver == "box":
                    sol = U.box_qp(M_inner, rhs[0], sol, settings.box_iterations)
                a[t] = sol
            z[t] = U.update_potentials(z, a, u, steps[t:t + 1], delta, theta, rho_l, beta_l, eps)[0]
        del u
        if not paper:
            update_weights(state, frames, settings, cache, l)


def _current_all(state: ADMMState, frames, l: int, settings: ADMMSettings,
                 cache: SolverCache | None = None) -> torch.Tensor:
    """u = W_l a_{l-1} for every sample (T, N, n_l), formed block by block (see :func:`_layer_current`)."""
    T, N = frames.shape[0], frames.shape[1]
    W = state.weights[l]
    u = torch.empty(T, N, W.shape[0], dtype=W.dtype, device=W.device)
    for sl in _blocks(state, frames, settings):
        u[:, sl] = _layer_current(state, frames, l, sl, W.dtype, cache, settings)
    return u


def sequential_output(state, frames, y, settings, cache, generator) -> None:
    """The paper's output layer (``output_solve="sweep"``): W_L, then z_{L,t} one t at a time (random
    order, t = T last). The exact block solves ("joint", "potentials") are the parallel schedule's."""
    if settings.output_solve != "sweep":
        parallel_output(state, frames, y, settings, cache, generator)
        return
    L, T = state.n_layers, frames.shape[0]
    update_weights(state, frames, settings, cache, L - 1)
    if settings.output_loss == "hinge":
        y = readout_targets(state, frames, y, settings)
    z = state.potentials[-1]
    u = _current_all(state, frames, L - 1, settings, cache)
    steps = torch.arange(T, device=frames.device)
    for t in _time_order(T, generator):
        z[t] = U.update_output_potentials_at(z, u, y, state.dual, steps[t:t + 1], settings.delta,
                                             settings.output_rho)[0]


def _take_current(state: ADMMState, frames, cache: SolverCache, l: int) -> torch.Tensor | None:
    """The currents W_l a_{l-1} (T, N, n_l) kept by :func:`reproject`, if the weights and the inputs they
    were formed from are still the state's (the same tensors, not modified in place since). They serve
    once: the entry is marked used, its buffer stays for the next re-projection."""
    kept = cache.extra.get(("current", l)) if cache is not None else None
    if kept is None or kept["key"] is None:
        return None
    W, w_version, inp, inp_version = kept["key"]
    kept["key"] = None
    now = state.layer_inputs(frames, l)
    if W is state.weights[l] and W._version == w_version and inp is now and inp._version == inp_version:
        return kept["u"]
    return None


def reproject(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache | None = None) -> None:
    """Replace hidden potentials and spikes by the exact forward simulation of the current weights.

    Block by block over samples like every per-sample update, in place (frames converted one block at a
    time; no copy of the state). Given a ``cache`` and without chunking, the hidden layers' input
    currents W_l a_{l-1} are kept in a buffer: they are exactly what the next hidden sweep needs (hidden
    weights do not change in between), which saves one product per hidden layer and iteration for one
    state-sized buffer per hidden layer."""
    T, N = frames.shape[0], frames.shape[1]
    dtype = state.weights[0].dtype
    p = settings.lif
    keep = cache is not None and _keeps_currents(settings, N)
    bufs = []
    for l in range(state.n_layers - 1):
        if not keep:
            bufs.append(None)
            continue
        shape = (T, N, state.weights[l].shape[0])
        rec = cache.extra.get(("current", l))
        if rec is None or tuple(rec["u"].shape) != shape or rec["u"].dtype != dtype or rec["u"].device != frames.device:
            rec = {"u": torch.empty(shape, dtype=dtype, device=frames.device), "key": None}
            cache.extra[("current", l)] = rec
        rec["key"] = None
        bufs.append(rec["u"])
    for sl in _blocks(state, frames, settings):
        inputs = frames[:, sl]
        for l in range(state.n_layers - 1):
            z = _layer_current(state, frames, l, sl, dtype, cache, settings, inputs)
            if keep:
                bufs[l][:, sl] = z
            a = lif_recurrence(z, p)
            state.potentials[l][:, sl] = z
            state.spikes[l][:, sl] = a
            inputs = state.spikes[l][:, sl]
    if keep:
        for l in range(state.n_layers - 1):
            src = state.layer_inputs(frames, l)
            cache.extra[("current", l)]["key"] = (state.weights[l], state.weights[l]._version, src, src._version)


def take_weight_step(state: ADMMState, previous: list, settings: ADMMSettings) -> None:
    """After a whole sweep of exact blocks, move each hidden layer's weights from ``previous`` along the
    step the sweep found: W_prev + η (W* − W_prev) (fixed η, or a length η·‖W_prev‖ with the relative
    rule). Taken after the sweep, so every layer's spike block saw the exact W* of the layer above."""
    relative = settings.step_rule == "relative"
    for l, W_prev in enumerate(previous):
        if frozen(state, settings, l):
            continue
        W = U.extrapolate(W_prev, state.weights[l], settings.weight_step, relative=relative)
        if settings.momentum > 0:  # heavy ball: v ← μ v + (W − W_prev), W ← W_prev + v
            key = f"momentum_{l}"
            v = U.momentum_velocity(state.aux.get(key), W - W_prev, settings.momentum)
            state.aux[key] = v
            W = W_prev + v
        state.weights[l] = W


def forget_inputs(cache: SolverCache) -> None:
    """Drop everything the cache derived from the training frames (input Gram, its factor and μ, the
    frames' sparse form, the input layer's L1 factor, the first conv layer's patch Gram), for frames
    that were replaced in place."""
    cache.input_gram = cache.input_gram_factor = cache.input_mu = None
    cache.frames_integer_max = None
    for key in [k for k in cache.extra if isinstance(k, tuple) and k[0] in ("sparse-block", "l1_factor",
                                                                            "conv-input-gram")]:
        del cache.extra[key]


def copies_exactly(W: torch.Tensor, delta: float, theta: float, margin: float = 1e-3) -> bool:
    """Whether a hidden layer with weights W = c·I copies every binary spike train of the layer below
    (a_t = a_in,t for all t) in the forward simulation z_t = δ z_{t-1} + c a_in,t − θ a_{t-1}.

    By induction on t: each earlier spike (in, then out) adds δ^(t-s-1) p to z_t, p = cδ − θ, so the
    history H_t lies in [0, p/(1−δ)) for p ≥ 0 and in (p/(1−δ), 0] for p < 0. The copy is exact iff a
    step without an input spike stays at or below θ (p/(1−δ) ≤ θ) and a step with one goes above it
    (c + min(0, p/(1−δ)) > θ). Both are asked with a relative ``margin`` for rounding; δ = 1 never
    copies (an unbounded history). δ = 0.95, θ = 1: c in [1.053, 1.105) (``identity_gain`` 1.1)."""
    if W.dim() != 2 or W.shape[0] != W.shape[1] or not delta < 1.0:
        return False
    c = W[0, 0]
    if not torch.equal(W, c * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)):
        return False
    c = float(c)
    history = (c * delta - theta) / (1.0 - delta)
    return history <= theta * (1 - margin) and c + min(0.0, history) > theta * (1 + margin)


def grown_layers(state: ADMMState, settings: ADMMSettings, iteration: int | None = None) -> int:
    """How many hidden layers iteration i (``iteration``, default ``state.iteration``) trains: 1 + i // K
    with growth every K iterations (:func:`frozen`), all of them without growth."""
    n, K = state.n_layers - 1, settings.grow_every
    i = state.iteration if iteration is None else iteration
    return n if not K else min(n, 1 + i // K)


def _truncatable(state: ADMMState, settings: ADMMSettings, grown: int) -> bool:
    """Whether the hidden layers from ``grown`` up are exact copies (:func:`copies_exactly`) of the
    layer below, so the network computes what its first ``grown`` hidden layers and the output compute,
    and no extension keeps per-layer variables of every layer (per-layer penalties, Anderson, L1 split)."""
    if not 1 <= grown < state.n_layers - 1 or P.active(settings) or settings.anderson or settings.l1:
        return False
    return all(copies_exactly(state.weights[l], settings.delta, settings.theta)
               for l in range(grown, state.n_layers - 1))


def _grow_states(state: ADMMState, frames, settings: ADMMSettings, l: int) -> None:
    """The states of hidden layer l, just grown: its forward simulation from the spikes of layer l−1,
    z_t = δ z_{t-1} + W_l a_{l-1,t} − θ a_{l,t-1} (the layer's states were not updated while the
    iterations ran on the shallower network)."""
    W = state.weights[l]
    for sl in _blocks(state, frames, settings):
        z = state.spikes[l - 1][:, sl].to(W.dtype) @ W.T
        state.spikes[l][:, sl] = lif_recurrence(z, settings.lif)
        state.potentials[l][:, sl] = z


def copy_states_filled(state: ADMMState, frames, settings: ADMMSettings) -> ADMMState:
    """``state`` as the deep network computes it, for a report after an iteration that ran on the
    shallow network (:func:`iterate`): the identity copies above the g = :func:`grown_layers` grown
    hidden layers (whose states that iteration skipped, so they are stale) carry their forward
    simulation from the layer below, z_t = δ z_{t-1} + W_l a_{l-1,t} − θ a_{l,t-1}, the states every
    other iteration gives them (the re-projection, or :func:`_grow_states` when they grow). A new
    state (new lists; the copies' tensors new), ``state`` unchanged; ``state`` itself when no layer
    was skipped."""
    g = grown_layers(state, settings, max(state.iteration - 1, 0))  # those of the iteration just run
    if not (g < state.n_layers - 1 and _truncatable(state, settings, g)):
        return state
    filled = ADMMState(list(state.weights), list(state.potentials), list(state.spikes), state.dual,
                       state.iteration, state.aux)
    for l in range(g, state.n_layers - 1):
        filled.potentials[l] = torch.empty_like(state.potentials[l])
        filled.spikes[l] = torch.empty_like(state.spikes[l])
        _grow_states(filled, frames, settings, l)
    return filled


def truncated_view(state: ADMMState, grown: int) -> ADMMState:
    """The network of the first ``grown`` hidden layers and the output layer: the same tensors (updated
    in place through the view), the output fed by the spikes of hidden layer ``grown``."""
    return ADMMState(state.weights[:grown] + state.weights[-1:], state.potentials[:grown] + state.potentials[-1:],
                     state.spikes[:grown], state.dual, state.iteration, state.aux)


def iterate(state: ADMMState, frames, y, settings: ADMMSettings, cache: SolverCache,
            generator: torch.Generator, redraw: Callable[[], None] | None = None, truncate: bool = True) -> None:
    """One full ADMM iteration in place: the block updates of the chosen schedule, the dual step after
    the warm-up, optional re-projection onto the forward simulation; checks for divergence.

    ``redraw``: called just before the re-projection; it replaces ``frames`` in place by a new draw of
    the training data (and must :func:`forget_inputs`), so the re-projection puts the states on the new
    frames and the output block, the dual step and the next iteration see them.

    Growth on the shallow network (``truncate``): while layer-by-layer growth (:func:`frozen`) keeps
    the layers above the first g = :func:`grown_layers` at exact identity copies (:func:`copies_exactly`),
    the deep network computes what its first g hidden layers and the output compute, so the iteration
    runs on that network (:func:`truncated_view`: every block of it, none of the copies' states) and a
    deep iteration during growth costs what a g-layer one does. A layer's states are formed when it
    grows (:func:`_grow_states`). ``truncate=False``: every layer's states are updated, frozen or not."""
    n = state.n_layers - 1
    grown = grown_layers(state, settings)
    if truncate and settings.grow_every and grown > 1 and state.iteration % settings.grow_every == 0 \
            and _truncatable(state, settings, grown - 1):
        _grow_states(state, frames, settings, grown - 1)  # the last iteration ran without this layer
    if not (truncate and grown < n and _truncatable(state, settings, grown)):
        return _iterate(state, frames, y, settings, cache, generator, redraw)
    view = truncated_view(state, grown)
    _iterate(view, frames, y, settings, cache, generator, redraw)
    state.weights[:grown], state.weights[-1] = view.weights[:grown], view.weights[-1]
    state.dual, state.iteration = view.dual, view.iteration


def _iterate(state: ADMMState, frames, y, settings: ADMMSettings, cache: SolverCache,
             generator: torch.Generator, redraw: Callable[[], None] | None = None) -> None:
    """:func:`iterate` on every layer of ``state``."""
    if settings.schedule == "parallel":
        hidden, output = parallel_hidden, parallel_output
    else:
        hidden, output = sequential_hidden, sequential_output
    stepping = settings.steps_hidden_weights
    SP.start_splits(state, settings)  # L1 split: V = soft_threshold(W, τ), U = 0 where not yet present
    previous = [w.clone() for w in state.weights[:-1]] if stepping or settings.anderson else None
    snap = P.snapshot(state, settings)  # states before the sweep, for the dual residuals (balancing only)
    hidden(state, frames, y, settings, cache, generator)
    exact = list(state.weights[:-1])  # T(x): the sweep's exact blocks, before the step
    if stepping:
        take_weight_step(state, previous, settings)
        SP.split_after_step(state, settings)  # L1 split with a step rule: its own block after the step
    if settings.anderson:  # safeguarded Anderson acceleration of the hidden weights (admm/anderson.py)
        AA.apply(state, previous, exact, settings)
    P.update(state, frames, settings, snap, cache.reduce, _blocks(state, frames, settings))  # balancing, continuation
    if settings.reproject and (state.iteration + 1) % settings.reproject == 0:
        if redraw is not None:
            redraw()
        reproject(state, frames, settings, cache)
    output(state, frames, y, settings, cache, generator)
    SP.update_splits(state, settings)  # V = soft_threshold(W + U, τ), U += W − V: after the step and output
    if settings.dual and state.iteration >= settings.warmup:
        update_dual(state, frames, settings)
    state.iteration += 1
    # one wait for the device per iteration (not one per checked tensor)
    U.check_all_finite([(w, f"weights of layer {l + 1}") for l, w in enumerate(state.weights)]
                       + [(state.potentials[-1], "output potentials"), (state.dual, "dual")], state.iteration)
