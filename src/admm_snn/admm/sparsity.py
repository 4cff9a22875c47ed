"""Sparsity for energy: an L1 penalty on the weights (through a split) and a firing-rate penalty.

Both extend the augmented Lagrangian of spec §2; every update below is the exact minimiser of the
extended Lagrangian over its block (or a scaled-dual step), so the tests check them like the others.

**L1 on the weights, by splitting.** For each penalised layer l (every hidden layer; the output layer too
with ``l1_output``) a copy V_l of the weights carries the L1 norm, tied to W_l by W_l = V_l with the
scaled dual U_l and the penalty κ_l:

    L_split = λ1_l ‖V_l‖₁ + (κ_l/2) ‖W_l − V_l + U_l‖² − (κ_l/2) ‖U_l‖²

(the scaled form of λ1‖V‖₁ + ⟨κU, W − V⟩ + (κ/2)‖W − V‖²). One ADMM round for the split:

    W-block:  the weight update gains (κ/2)‖W − V + U‖²; with k = κ_l/ρ_l its exact minimiser is
                  W = (C + μ W₀ + k (V − U)) (G + (μ + k) I)^{-1}
              (G, C, μ, W₀ as in :func:`updates.solve_weights`: W₀ = 0 for the ridge, W_prev for the
              proximal variant; for the joint output solve see :func:`joint_output_split`);
    V-block:  V = argmin λ1‖V‖₁ + (κ/2)‖W − V + U‖² = soft_threshold(W + U, λ1/κ)   (exact prox);
    dual:     U ← U + W − V.

Scaling, like the ridge (which is relative to the Gram matrix: μ = ridge·s with s = tr(G)/n):
κ_l = ρ_l · l1_penalty · s_l and λ1_l = ρ_l · l1 · s_l, so the threshold is τ = λ1/κ = l1/l1_penalty
(in weight units) for every layer. s_l is taken from the Gram matrix of the layer's first weight update
with the split and then frozen (κ_l is kept in ``state.aux``), so the split's ADMM keeps one penalty and
one objective; for the joint output solve s = tr(G_S)/n of its leaky-sum Gram, converted to the
Lagrangian's κ (see :func:`joint_output_split`).

Where the split updates go, and the step rule. With exact weight blocks (``step_rule="fixed"``,
``weight_step=1``, and always for the output layer, which is never stepped) the split term is part of
the W-block's Gram solve above. The default step rule instead moves the hidden weights after the sweep by
a step of fixed relative length (``take_weight_step``) along the block minimiser's direction; the block's
own move is tiny (its proximal weight μ is large) and the step multiplies it by η ≈ 10³ on N-MNIST. A split
term inside that block would be multiplied too: its pull towards V − U then dominates the direction
(the data's part of the step is starved) and the split's ADMM is over-relaxed ~100-fold at l1_penalty = 1
(measured on N-MNIST with that first design, 6 iterations: every τ tried cost 2-8 points of test accuracy
and V stayed 86-98% dense). So with a step rule the hidden W-block stays the
plain one, and the split gets its own exact block right after the step (:func:`split_after_step`):

    W = argmin (ρμ'/2)‖W − W_step‖² + (κ/2)‖W − V + U‖² = (1 − c) W_step + c (V − U),
    μ' = ridge·s_l (the block's proximal weight at the frozen scale), c = k/(μ' + k) = l1_penalty/(ridge + l1_penalty)

(a linearised ADMM: the data enters through the step, the split through this block). V and U are then
updated once per iteration, after the step and after the output block (:func:`update_splits`), from
the weights the network really has: V is the exactly sparse copy of those W, U the running sum of their
differences. The first iteration with the split starts from V = soft_threshold(W, τ), U = 0
(:func:`start_splits`), so the starting weights (and the readout fitted by ``init_state``) are untouched.

State (``state.aux``, saved in checkpoints as ``aux.<name>`` and restored bitwise on resume):
``l1_v.<l>`` V_l, ``l1_u.<l>`` U_l (weights-shaped, in the weights' dtype) and ``l1_kappa.<l>`` κ_l (a
one-element float64 tensor, set at the layer's first split weight update).

**Firing-rate penalty.** γ · Σ_{l<L} Σ_t Σ_{samples, neurons} a_{l,t} (γ ≥ 0 per hidden spike). It is
linear in the spikes, so the spike block keeps its matrix and stays exact: its objective
½ aᵀ M a − bᵀ a + γ 1ᵀa has the minimiser M a = b − γ 1 (in the Lagrangian's units of
:func:`updates.spike_rhs`; γ/ρ in the spec's form divided by ρ), for every t including t = T; "clip" clips
that solve, "box" minimises the shifted objective over [0, 1]^n exactly. Scale: the spike block weighs
a against h(z) with β (default 1e-3), and the default step rule normalises whatever direction the states
give the hidden weights, so small γ already matter (N-MNIST, 6 iterations: γ = 1e-5 roughly halves the
hidden firing rate).
"""

from __future__ import annotations

import torch

from . import updates as U


def _v(l: int) -> str:
    return f"l1_v.{l}"


def _u(l: int) -> str:
    return f"l1_u.{l}"


def _kappa(l: int) -> str:
    return f"l1_kappa.{l}"


# ----------------------------------------------------------------------------------------------------
# Pure formulas
# ----------------------------------------------------------------------------------------------------

def soft_threshold(x: torch.Tensor, tau: float) -> torch.Tensor:
    """sign(x) · max(|x| − τ, 0), elementwise: the exact minimiser of τ‖v‖₁ + ½‖v − x‖² (the prox of
    the L1 norm). Entries with |x| ≤ τ become exactly 0."""
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0.0)


def split_weight_solve(G: torch.Tensor, C: torch.Tensor, mu, k, V: torch.Tensor, Ud: torch.Tensor,
                       anchor: torch.Tensor | None = None, factor: torch.Tensor | None = None):
    """W = (C + μ W₀ + k (V − U)) (G + (μ + k) I)^{-1}: the exact minimiser of

        (ρ/2) Σ‖x − W a‖² + (ρμ/2)‖W − W₀‖² + (κ/2)‖W − V + U‖²   [− ⟨λ, W a_T⟩ for the output]
    with k = κ/ρ (W₀ = ``anchor``, or 0 when None). Setting the gradient to zero:
    ρ(W G − C) + ρμ(W − W₀) + κ(W − V + U) = 0. Solved with a Cholesky factor of G + (μ + k)I
    (pass ``factor`` to reuse one). Returns ``(W, factor)``."""
    if factor is None:
        factor = U.cholesky(U.plus_diagonal(G, mu + k), "Gram matrix of the weight update")
    rhs = C + k * (V.to(C.dtype) - Ud.to(C.dtype))
    if anchor is not None:
        rhs = rhs + mu * anchor.to(C.dtype)
    return torch.cholesky_solve(rhs.T.contiguous(), factor).T, factor


def split_step(W: torch.Tensor, Ud: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The V-block and the scaled dual step of the split: V = soft_threshold(W + U, τ), U' = U + W − V."""
    V = soft_threshold(W + Ud, tau)
    return V, Ud + W - V


def rate_rhs(rhs: torch.Tensor, gamma: float) -> torch.Tensor:
    """The spike block's right-hand side with the rate penalty γ Σ a: b − γ (in place; unchanged for
    γ = 0). See the module docstring."""
    if gamma:
        rhs -= gamma
    return rhs


def split_value(W: torch.Tensor, V: torch.Tensor, Ud: torch.Tensor, lam1: float, kappa: float) -> float:
    """λ1‖V‖₁ + (κ/2)‖W − V + U‖² − (κ/2)‖U‖² (the split's part of the augmented Lagrangian)."""
    W, V, Ud = W.double(), V.double(), Ud.double()
    return float(lam1 * V.abs().sum() + 0.5 * kappa * ((W - V + Ud) ** 2).sum() - 0.5 * kappa * (Ud ** 2).sum())


def rate_value(spikes: list[torch.Tensor], gamma: float) -> float:
    """γ Σ_l Σ a_l over hidden layers, samples, time steps and neurons."""
    return float(gamma * sum(float(a.double().sum()) for a in spikes)) if gamma else 0.0


# ----------------------------------------------------------------------------------------------------
# Hooks of the solver (settings and state)
# ----------------------------------------------------------------------------------------------------

def threshold(settings) -> float:
    """τ = λ1/κ = l1 / l1_penalty."""
    return settings.l1 / settings.l1_penalty


def split_layers(settings, n_layers: int) -> list[int]:
    """The (0-based) layers with the L1 split: every hidden layer, and the output with ``l1_output``."""
    if not settings.l1:
        return []
    return list(range(n_layers if settings.l1_output else n_layers - 1))


def active(state, settings, l: int) -> bool:
    """Whether layer l has the split now (L1 on for the layer, and its V exists)."""
    return bool(settings.l1) and (settings.l1_output or l < state.n_layers - 1) and _v(l) in state.aux


def in_block(state, settings, l: int) -> bool:
    """Whether layer l's split term goes into its W-block's Gram solve: the output layer (never stepped),
    and hidden layers when no step follows the sweep. Otherwise :func:`split_after_step` applies it."""
    return active(state, settings, l) and (l == state.n_layers - 1 or not settings.steps_hidden_weights)


def split_after_step(state, settings) -> None:
    """With a step rule: each split hidden layer's W ← (1 − c) W + c (V − U), c = l1_penalty/(ridge +
    l1_penalty), the exact minimiser of (ρμ'/2)‖W − W_step‖² + (κ/2)‖W − V + U‖² (module docstring)."""
    c = settings.l1_penalty / (settings.ridge + settings.l1_penalty)
    for l in range(state.n_layers - 1):
        if active(state, settings, l):
            W = state.weights[l]
            state.weights[l] = ((1.0 - c) * W + c * (state.aux[_v(l)] - state.aux[_u(l)])).to(W.dtype)


def start_splits(state, settings) -> None:
    """Before the first iteration with the split: V_l = soft_threshold(W_l, τ), U_l = 0 (κ_l is set at
    the layer's first weight update). Does nothing for layers that already have V (a resumed run)."""
    tau = threshold(settings)
    for l in split_layers(settings, state.n_layers):
        if _v(l) not in state.aux:
            W = state.weights[l]
            state.aux[_v(l)] = soft_threshold(W, tau)
            state.aux[_u(l)] = torch.zeros_like(W)


def update_splits(state, settings) -> None:
    """V-block and dual step of every split layer, from the current weights (after the step)."""
    tau = threshold(settings)
    for l in split_layers(settings, state.n_layers):
        if _v(l) in state.aux:
            state.aux[_v(l)], state.aux[_u(l)] = split_step(state.weights[l], state.aux[_u(l)], tau)


def kappa(state, settings, l: int, G: torch.Tensor, rho: float, scale: float = 1.0) -> torch.Tensor:
    """κ_l (a float64 tensor, one element): ρ_l · l1_penalty · tr(G)/n · ``scale`` from the Gram matrix of the
    layer's first split update, then the stored value."""
    key = _kappa(l)
    if key not in state.aux:
        s = torch.diagonal(G).sum().double() / max(G.shape[0], 1)
        state.aux[key] = (rho * settings.l1_penalty * scale * s).reshape(1)
    return state.aux[key]


def split_weight_update(state, settings, cache, l: int, G, C, ridge: float, anchor, rho: float, mu=None):
    """W_l with the split term (the plain ``update_weights`` path: hidden layers, and the output layer
    with ``output_solve`` "potentials"/"sweep"). ``rho``: the layer's penalty ρ_l, so k = κ_l/ρ_l. For the
    input layer (fixed Gram G, fixed μ, frozen κ) the factor of G + (μ + k)I is kept in ``cache.extra``
    while k stays the same (ρ_l moves only with adaptive penalties)."""
    if mu is None:
        mu = U.ridge_tensor(G, ridge)
    k = (kappa(state, settings, l, G, rho)[0] / rho).to(G.dtype)
    key = ("l1_factor", l)
    kept = cache.extra.get(key) if l == 0 else None
    factor = kept[1] if kept is not None and float(kept[0]) == float(k) else None
    W, factor = split_weight_solve(G, C, mu, k, state.aux[_v(l)], state.aux[_u(l)], anchor, factor)
    if l == 0:
        cache.extra[key] = (k, factor)
    return W


def joint_output_split(state, settings, G_S: torch.Tensor, C_S: torch.Tensor, T: int):
    """The split term in the joint output solve. Eliminating the potentials leaves (updates.
    joint_output_statistics) min_W (ρ/(ρ+2K)) Σ‖W S − y − λ/ρ‖² + (ρμ/2)‖W‖² + (κ/2)‖W − V + U‖²,
    K = Σ_t δ^{2(T−t)}; multiplied by (ρ+2K)/(2ρ) the normal equations are

        W (G_S + μ_S I + κ_S I) = C_S + κ_S (V − U),   κ_S = κ (ρ + 2K) / (2ρ).
    κ_S = l1_penalty · tr(G_S)/n (relative like μ_S) at the first update, i.e. the Lagrangian's
    κ = 2ρ κ_S / (ρ + 2K), which is what is stored. Returns ``(κ_S, C_S + κ_S (V − U))``."""
    l, rho = state.n_layers - 1, settings.output_rho
    K = sum(settings.delta ** (2 * j) for j in range(T))
    kap = kappa(state, settings, l, G_S, rho, scale=2.0 / (rho + 2.0 * K))
    k_S = (kap[0] * (rho + 2.0 * K) / (2.0 * rho)).to(G_S.dtype)
    return k_S, C_S + k_S * (state.aux[_v(l)].to(C_S.dtype) - state.aux[_u(l)].to(C_S.dtype))


def lagrangian_split_terms(state, l1: float, l1_penalty: float) -> list[float]:
    """Per layer, the split's part of the Lagrangian (0 for layers without a split)."""
    out = []
    for l, W in enumerate(state.weights):
        if l1 and _v(l) in state.aux and _kappa(l) in state.aux:
            kap = float(state.aux[_kappa(l)][0])
            out.append(split_value(W, state.aux[_v(l)], state.aux[_u(l)], kap * l1 / l1_penalty, kap))
        else:
            out.append(0.0)
    return out


def sparse_weights(state) -> list[torch.Tensor]:
    """The network with each split layer's weights replaced by its exactly sparse copy V_l."""
    return [state.aux.get(_v(l), W).to(W.dtype) for l, W in enumerate(state.weights)]


def density(weights: list[torch.Tensor]) -> list[float]:
    """Fraction of nonzero entries of each weight matrix."""
    return [float((w != 0).double().mean()) for w in weights]


def nonzero_synaptic_ops(weights, frames: torch.Tensor, spikes: list[torch.Tensor]) -> float:
    """Synaptic operations per sample that touch a nonzero weight: Σ_l Σ_j (events of input j to layer l)
    · (nonzero weights in column j of W_l). Equals ``network.synaptic_operations`` for dense weights."""
    N = frames.shape[1]
    ops = 0.0
    for l, W in enumerate(weights):
        a = frames if l == 0 else spikes[l - 1]
        events = a.reshape(-1, a.shape[-1]).ne(0).double().sum(0) if l == 0 else \
            a.reshape(-1, a.shape[-1]).double().sum(0)
        ops += float(events @ (W != 0).double().sum(0))
    return ops / max(N, 1)
