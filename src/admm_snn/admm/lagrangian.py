"""The augmented Lagrangian (spec section 2) and the residuals that say how far the relaxed states are
from a real network."""

from __future__ import annotations

import torch

from ..network import LIFParams, forward, heaviside
from . import sparsity
from .state import ADMMState
from .updates import targets


def lagrangian_terms(state: ADMMState, frames: torch.Tensor, y: torch.Tensor, rho: float, beta: float,
                     params: LIFParams, rho_out: float | None = None, rate_penalty: float = 0.0,
                     l1: float = 0.0, l1_penalty: float = 10.0, loss_times: list[int] | None = None) -> dict:
    """Each term of

        L = ‖z_{L,T} − y‖² + Σ_{l<L} Σ_t [(ρ/2)‖z_{l,t} − δ z_{l,t-1} − W_l a_{l-1,t} + θ a_{l,t-1}‖²
                                           + (β/2)‖a_{l,t} − h(z_{l,t})‖² + γ Σ a_{l,t}]
            + Σ_t (ρ/2)‖z_{L,t} − δ z_{L,t-1} − W_L a_{L-1,t}‖² + ⟨λ, z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T}⟩
            + Σ_l [λ1_l ‖V_l‖₁ + (κ_l/2)‖W_l − V_l + U_l‖² − (κ_l/2)‖U_l‖²]        (L1 split, sparsity.py)

    summed over samples, as Python floats: ``loss``, ``dynamics`` (per layer), ``spike`` (per hidden
    layer), ``dual``, ``rate`` (γ = ``rate_penalty``), ``l1`` (per layer; nonzero only for layers with a
    split in ``state.aux`` and ``l1`` > 0, with λ1_l = κ_l·l1/l1_penalty) and their total ``lagrangian``. With ``loss_times`` 𝒯 (the steps
    of ADMMSettings.loss_steps) the loss is Σ_{t∈𝒯} ‖z_{L,t} − y‖²."""
    # rho and beta may also be sequences of one value per hidden layer (ρ_l, β_l of admm/penalties.py);
    # then the output uses rho_out, which must be given
    delta, theta = params.delta, params.theta
    L = state.n_layers
    dyn, spk = [], []
    for l in range(L):
        a_in = state.layer_inputs(frames, l).to(state.weights[l].dtype)
        u = a_in @ state.weights[l].T
        hidden = l < L - 1
        x = targets(state.potentials[l], state.spikes[l] if hidden else None, delta, theta)
        res = x - u
        rho_l = rho[l] if hidden and not isinstance(rho, (int, float)) else rho  # per-layer ρ_l (penalties.py)
        dyn.append(0.5 * (rho_l if hidden or rho_out is None else rho_out) * float((res ** 2).sum()))
        if hidden:
            a = state.spikes[l]
            beta_l = beta if isinstance(beta, (int, float)) else beta[l]
            spk.append(0.5 * beta_l * float(((a - heaviside(state.potentials[l], theta)) ** 2).sum()))
        else:
            dual_term = float((state.dual * res[-1]).sum())
    z_out = state.potentials[-1]
    loss = float(((z_out[-1] - y) ** 2).sum()) if loss_times is None else \
        float(((z_out[loss_times] - y.unsqueeze(0)) ** 2).sum())
    rate = sparsity.rate_value(state.spikes, rate_penalty)
    split = sparsity.lagrangian_split_terms(state, l1, l1_penalty)
    total = loss + sum(dyn) + sum(spk) + dual_term + rate + sum(split)
    return {"lagrangian": total, "loss": loss, "dynamics": dyn, "spike": spk, "dual": dual_term, "rate": rate,
            "l1": split}


def residual_sums(state: ADMMState, frames: torch.Tensor, params: LIFParams) -> dict:
    """Sums of squares (float64) and numbers of entries of the primal residuals (they add across
    samples, hence across processes):

        output   z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T}        (the exact constraint)
        dynamics[l]  x_{l,t} − W_l a_{l-1,t}                 (per layer, all t)
        spike[l]     a_{l,t} − h(z_{l,t})                    (per hidden layer)
    as ``{"output": (Σ r², n), "dynamics": [(Σ r², n), ...], "spike": [...]}``."""
    delta, theta = params.delta, params.theta
    L = state.n_layers
    dyn, spk = [], []
    out = (0.0, 0.0)
    for l in range(L):
        a_in = state.layer_inputs(frames, l).to(state.weights[l].dtype)
        u = a_in @ state.weights[l].T
        hidden = l < L - 1
        res = targets(state.potentials[l], state.spikes[l] if hidden else None, delta, theta) - u
        dyn.append((float(res.square().sum(dtype=torch.float64)), float(res.numel())))
        if hidden:
            r = state.spikes[l] - heaviside(state.potentials[l], theta)
            spk.append((float(r.square().sum(dtype=torch.float64)), float(r.numel())))
        else:
            out = (float(res[-1].square().sum(dtype=torch.float64)), float(res[-1].numel()))
    return {"output": out, "dynamics": dyn, "spike": spk}


def residuals(state: ADMMState, frames: torch.Tensor, params: LIFParams) -> dict:
    """The primal residuals of :func:`residual_sums` as root-mean-squares per entry:
    ``{"output": r, "dynamics": [r_l, ...], "spike": [r_l, ...]}``."""
    s = residual_sums(state, frames, params)
    rms = lambda pair: (pair[0] / max(pair[1], 1.0)) ** 0.5  # noqa: E731
    return {"output": rms(s["output"]), "dynamics": [rms(p) for p in s["dynamics"]],
            "spike": [rms(p) for p in s["spike"]]}


def forward_gap(state: ADMMState, frames: torch.Tensor, params: LIFParams) -> list[float]:
    """Per hidden layer: the fraction of (t, sample, neuron) where the true forward simulation of the
    current weights spikes differently from the rounded relaxed spikes round(a)."""
    trace = forward(state.weights, frames, params)
    return [float((fa != a.round()).float().mean()) for fa, a in zip(trace.spikes, state.spikes)]
