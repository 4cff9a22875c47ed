"""One ADMM iteration, in the paper's sequential order or in the exact parallel schedule (spec §3-4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..network import forward, heaviside
from . import updates as U
from .settings import ADMMSettings
from .state import ADMMState, random_weights, uniform_state

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SolverCache:
    """Factorisations that stay valid across iterations: the input layer's Gram factor (the input Gram
    never changes) and the output system of the joint output solve."""

    input_gram: torch.Tensor | None = None
    input_gram_factor: torch.Tensor | None = None
    input_mu: torch.Tensor | None = None
    """μ of the input layer's ridge (computed once from the fixed input Gram)."""
    frames_int8: bool | None = None
    """Whether the frames hold integers in [0, 127] (then the input Gram is formed exactly in int8)."""
    output_system: tuple | None = None
    reduce: Callable[[torch.Tensor], torch.Tensor] = staticmethod(lambda t: t)
    """Sums a tensor over every process (identity in one process; an all-reduce in data-parallel runs)."""
    extra: dict = field(default_factory=dict)


def init_state(frames: torch.Tensor, y: torch.Tensor, sizes: list[int], settings: ADMMSettings,
               generator: torch.Generator, cache: "SolverCache | None" = None) -> ADMMState:
    """The starting point: ``init="uniform"`` is the paper's (W = 0, z and a uniform in [0, 1), λ = 0);
    ``init="forward"`` draws random weights, takes the states of their forward simulation and (parallel
    schedule) fits the output block to them, so the first sweep already sees the output's error."""
    dtype, device = DTYPES[settings.dtype], frames.device
    T, N = frames.shape[0], frames.shape[1]
    if settings.init == "uniform":
        weights = [torch.zeros(sizes[l], sizes[l - 1], dtype=dtype, device=device) for l in range(1, len(sizes))]
        pots, spikes = uniform_state(sizes, T, N, generator, dtype, device)
    else:
        weights = random_weights(sizes, settings.init_gain, generator, dtype, device)
        # chunked over samples; the frames (possibly uint8) are converted one chunk at a time
        trace = forward(weights, frames, settings.lif, chunk=settings.chunk_size)
        pots, spikes = trace.potentials, trace.spikes
    dual = torch.zeros(N, sizes[-1], dtype=dtype, device=device)
    state = ADMMState(weights, pots, spikes, dual, 0)
    if settings.init == "forward" and settings.schedule == "parallel":
        parallel_output(state, frames, y, settings, cache or SolverCache(), generator)
    return state


def _chunks(N: int, size: int | None):
    size = size or N
    for s in range(0, N, size):
        yield slice(s, min(s + size, N))


def _next_targets(state: ADMMState, l: int, sl, delta, theta):
    """c = x_{l+1,t} for the samples ``sl``: the targets of the layer above layer l."""
    hidden_next = l + 1 < state.n_layers - 1
    return U.targets(state.potentials[l + 1][:, sl], state.spikes[l + 1][:, sl] if hidden_next else None,
                     delta, theta)


def _frames_int8(frames: torch.Tensor, cache: SolverCache, chunk: int | None) -> bool:
    """Whether every frame value is an integer in [0, 127] (binary spike frames are): checked once per
    run, chunk by chunk, and remembered in the cache."""
    if cache.frames_int8 is None:
        ok = True
        if frames.is_floating_point():
            for sl in _chunks(frames.shape[1], chunk):
                f = frames[:, sl]
                ok = ok and bool(((f == f.round()) & (f >= 0) & (f <= U.INT8_EXACT_MAX)).all())
        elif frames.dtype == torch.bool:
            ok = True
        else:
            ok = frames.numel() == 0 or (int(frames.min()) >= 0 and int(frames.max()) <= U.INT8_EXACT_MAX)
        cache.frames_int8 = ok
    return cache.frames_int8


def _weight_sums(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache, l: int, sl,
                 inputs: torch.Tensor | None = None):
    """(G, C) of W_l's update over the samples ``sl`` (G None for the input layer once its Gram is known).
    ``inputs``: the chunk's a_{l-1}, if the caller already has it."""
    gdt = DTYPES[settings.gram_dtype]
    out = l == state.n_layers - 1
    first = l == 0
    if inputs is None:
        inputs = state.layer_inputs(frames, l)[:, sl]
    x = U.targets(state.potentials[l][:, sl], None if out else state.spikes[l][:, sl], settings.delta,
                  settings.theta)
    gram = not first or cache.input_gram is None
    g, c = U.weight_statistics(inputs, x, gdt, state.dual[sl] if out else None, settings.output_rho,
                               gram=gram and not first)
    if first and gram:
        # the fixed input Gram, formed once (exactly in int8 when the frames are small integers)
        g = U.input_gram(inputs, gdt, _frames_int8(frames, cache, settings.chunk_size))
    return g, c


def _add(acc, g, c):
    if acc is None:
        return [g, c]
    if g is not None:
        acc[0] = g if acc[0] is None else acc[0].add_(g)
    acc[1].add_(c)
    return acc


def update_weights(state: ADMMState, frames, settings: ADMMSettings, cache: SolverCache, l: int,
                   stats=None) -> None:
    """W_l ← exact least-squares minimiser, from the sums over chunks of samples (§3 step 1).

    ``stats`` = (G, C) summed over every local sample by the caller (the parallel schedule forms them
    while it updates the states chunk by chunk); None: formed here."""
    L = state.n_layers
    out = l == L - 1
    first = l == 0
    if stats is None:
        acc = None
        for sl in _chunks(frames.shape[1], settings.chunk_size):
            acc = _add(acc, *_weight_sums(state, frames, settings, cache, l, sl))
        stats = acc
    G, C = stats
    C = cache.reduce(C)
    if first and cache.input_gram is None:
        cache.input_gram = cache.reduce(G)
    elif not first:
        G = cache.reduce(G)
    anchor = state.weights[l] if (settings.proximal and not out) else None
    ridge = settings.output_ridge if out else settings.ridge
    if first:
        if cache.input_mu is None:
            cache.input_mu = U.ridge_tensor(cache.input_gram, ridge)
        W, factor = U.solve_weights(cache.input_gram, C, ridge, cache.input_gram_factor, anchor, mu=cache.input_mu)
        cache.input_gram_factor = factor
    else:
        W, _ = U.solve_weights(G, C, ridge, None, anchor)
    W = W.to(state.weights[l].dtype)
    if not out and settings.weight_step != 1.0:
        W = U.extrapolate(state.weights[l], W, settings.weight_step)
    state.weights[l] = W


def _spike_setup(state, l, settings):
    W_next = state.weights[l + 1]
    dual_next = l + 1 == state.n_layers - 1
    rhos = (settings.rho, settings.output_rho if dual_next else settings.rho)
    M_inner, M_last = U.spike_matrices(W_next, settings.theta, rhos[0], rhos[1], settings.beta)
    factors = (U.cholesky(M_inner, "spike-update matrix"), U.cholesky(M_last, "spike-update matrix"))
    return W_next, rhos, M_inner, M_last, factors, dual_next


def update_spikes_all_t(state: ADMMState, frames, settings: ADMMSettings, l: int) -> None:
    """a_{l,t} for all t at once (one factorisation, T·N right-hand sides), exact given the rest."""
    W_next, rhos, M_inner, M_last, factors, dual_next = _spike_setup(state, l, settings)
    delta, theta = settings.delta, settings.theta
    for sl in _chunks(frames.shape[1], settings.chunk_size):
        z = state.potentials[l][:, sl]
        u = state.layer_inputs(frames, l)[:, sl].to(z.dtype) @ state.weights[l].T
        d_next = torch.empty_like(z)
        d_next[:-1] = z[1:] - delta * z[:-1] - u[1:]
        d_next[-1] = 0
        c = _next_targets(state, l, sl, delta, theta)
        rhs = U.spike_rhs(W_next, c, d_next, heaviside(z, theta), theta, *rhos, settings.beta,
                          state.dual[sl] if dual_next else None)
        state.spikes[l][:, sl] = U.solve_spikes(M_inner, M_last, rhs, settings.spike_solver,
                                                settings.box_iterations, factors)


def update_potentials_red_black(state: ADMMState, frames, settings: ADMMSettings, l: int) -> None:
    """z_{l,t}: all even t, then all odd t (z_t shares terms only with z_{t±1}: an exact block update)."""
    T = frames.shape[0]
    dev = frames.device
    for sl in _chunks(frames.shape[1], settings.chunk_size):
        z = state.potentials[l][:, sl]
        a = state.spikes[l][:, sl]
        u = state.layer_inputs(frames, l)[:, sl].to(z.dtype) @ state.weights[l].T
        for parity in (0, 1):
            t = torch.arange(parity, T, 2, device=dev)
            z[t] = U.update_potentials(z, a, u, t, settings.delta, settings.theta, settings.rho, settings.beta,
                                       settings.eps)
        state.potentials[l][:, sl] = z


def update_output_joint_weights(state: ADMMState, frames, y, settings: ADMMSettings,
                                cache: SolverCache | None = None) -> None:
    """W_L by the exact joint minimisation over (W_L, z_L): ridge regression of y + λ/ρ on leaky sums."""
    gdt = DTYPES[settings.gram_dtype]
    G = C = None
    for sl in _chunks(frames.shape[1], settings.chunk_size):
        g, c = U.joint_output_statistics(state.layer_inputs(frames, state.n_layers - 1)[:, sl], y[sl],
                                         state.dual[sl], settings.delta, settings.output_rho, gdt)
        G, C = (g, c) if G is None else (G + g, C + c)
    if cache is not None:
        G, C = cache.reduce(G), cache.reduce(C)
    mu_S, _ = U.joint_output_ridge(G, settings.output_ridge, settings.delta, settings.output_rho, frames.shape[0])
    factor = U.cholesky(G + mu_S * torch.eye(G.shape[0], dtype=G.dtype, device=G.device), "output Gram matrix")
    W, _ = U.solve_weights(G, C, settings.output_ridge, factor)
    state.weights[-1] = W.to(state.weights[-1].dtype)


def update_output(state: ADMMState, frames, y, settings: ADMMSettings, cache: SolverCache) -> None:
    """Output potentials: the exact joint T×T solve, or red-black sweeps of the spec's step 4."""
    L = state.n_layers
    T = frames.shape[0]
    for sl in _chunks(frames.shape[1], settings.chunk_size):
        u = state.layer_inputs(frames, L - 1)[:, sl].to(state.weights[-1].dtype) @ state.weights[-1].T
        if settings.output_solve in ("joint", "potentials"):
            if cache.output_system is None:
                cache.output_system = U.output_system(T, settings.delta, settings.output_rho, torch.float64,
                                                      u.device)
            state.potentials[-1][:, sl] = U.solve_output_potentials(u, y[sl], state.dual[sl], settings.delta,
                                                                    settings.output_rho, cache.output_system)
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
    for sl in _chunks(frames.shape[1], settings.chunk_size):
        u_last = state.layer_inputs(frames, L - 1)[-1, sl].to(state.weights[-1].dtype) @ state.weights[-1].T
        state.dual[sl] = U.update_dual(state.dual[sl], state.potentials[-1][:, sl], u_last, settings.delta,
                                       settings.output_rho)


def parallel_hidden(state, frames, y, settings, cache, generator) -> None:
    """Hidden layers from the top down (the output's targets reach the first layer in one sweep); in
    each: spikes of all t in one solve, potentials red-black in time, then W_l from the new states."""
    for l in reversed(range(state.n_layers - 1)):
        update_spikes_all_t(state, frames, settings, l)
        update_potentials_red_black(state, frames, settings, l)
        update_weights(state, frames, settings, cache, l)


def parallel_output(state, frames, y, settings, cache, generator) -> None:
    """The output block: (W_L, z_L) jointly, or W_L then the potentials (settings.output_solve)."""
    if settings.output_solve == "joint":
        update_output_joint_weights(state, frames, y, settings, cache)
    else:
        update_weights(state, frames, settings, cache, state.n_layers - 1)
    update_output(state, frames, y, settings, cache)


def _time_order(T: int, generator: torch.Generator) -> list[int]:
    """A fresh random order of t = 1..T-1 (0-based 0..T-2), then t = T last."""
    return torch.randperm(T - 1, generator=generator).tolist() + [T - 1]


def sequential_hidden(state, frames, y, settings, cache, generator) -> None:
    """The paper's schedule: hidden layers in random order; in each, W_l then one t at a time (random
    order of t < T, t = T last): spikes a_{l,t}, then potentials z_{l,t}."""
    L, T = state.n_layers, frames.shape[0]
    delta, theta, rho, beta, eps = settings.delta, settings.theta, settings.rho, settings.beta, settings.eps
    dev = frames.device
    for l in torch.randperm(L - 1, generator=generator).tolist():
        update_weights(state, frames, settings, cache, l)
        W_next, rhos, M_inner, M_last, factors, dual_next = _spike_setup(state, l, settings)
        z, a = state.potentials[l], state.spikes[l]
        u = state.layer_inputs(frames, l).to(z.dtype) @ state.weights[l].T
        for t in _time_order(T, generator):
            last = t == T - 1
            c = _next_targets(state, l, slice(None), delta, theta)[t:t + 1]
            d1 = torch.zeros_like(z[t:t + 1]) if last else z[t + 1:t + 2] - delta * z[t:t + 1] - u[t + 1:t + 2]
            rhs = U.spike_rhs(W_next, c, d1, heaviside(z[t:t + 1], theta), theta, *rhos, beta,
                              state.dual if (dual_next and last) else None, includes_last=last)
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
            idx = torch.tensor([t], device=dev)
            z[t] = U.update_potentials(z, a, u, idx, delta, theta, rho, beta, eps)[0]


def sequential_output(state, frames, y, settings, cache, generator) -> None:
    """The paper's output layer: W_L, then z_{L,t} one t at a time (random order, t = T last)."""
    L, T = state.n_layers, frames.shape[0]
    dev = frames.device
    update_weights(state, frames, settings, cache, L - 1)
    z = state.potentials[-1]
    u = state.layer_inputs(frames, L - 1).to(z.dtype) @ state.weights[-1].T
    for t in _time_order(T, generator):
        idx = torch.tensor([t], device=dev)
        z[t] = U.update_output_potentials_at(z, u, y, state.dual, idx, settings.delta, settings.output_rho)[0]


def reproject(state: ADMMState, frames, settings: ADMMSettings) -> None:
    """Replace hidden potentials and spikes by the exact forward simulation of the current weights."""
    pots, spikes = state_from_forward(state.weights, frames.to(state.weights[0].dtype),
                                      settings.lif)
    state.potentials[:-1] = pots[:-1]
    state.spikes[:] = spikes


def iterate(state: ADMMState, frames, y, settings: ADMMSettings, cache: SolverCache,
            generator: torch.Generator) -> None:
    """One full ADMM iteration in place: the block updates of the chosen schedule, the dual step after
    the warm-up, optional re-projection onto the forward simulation; checks for divergence."""
    if settings.schedule == "parallel":
        hidden, output = parallel_hidden, parallel_output
    else:
        hidden, output = sequential_hidden, sequential_output
    hidden(state, frames, y, settings, cache, generator)
    if settings.reproject and (state.iteration + 1) % settings.reproject == 0:
        reproject(state, frames, settings)
    output(state, frames, y, settings, cache, generator)
    if settings.dual and state.iteration >= settings.warmup:
        update_dual(state, frames, settings)
    state.iteration += 1
    for l, w in enumerate(state.weights):
        U.check_finite(w, f"weights of layer {l + 1}", state.iteration)
    U.check_finite(state.potentials[-1], "output potentials", state.iteration)
    U.check_finite(state.dual, "dual", state.iteration)
