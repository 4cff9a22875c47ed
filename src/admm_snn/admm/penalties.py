"""Per-layer penalties: residual balancing (Boyd et al. 2011, §3.4.1) and continuation.

Every hidden layer l has its own dynamics penalty ρ_l and spike-consistency penalty β_l. While neither
adaptive feature is on, they are the settings' ρ and β and nothing is stored. Once one is on, they live
in ``state.aux`` (checkpointed and restored bitwise on resume) as float64 tensors of one entry per hidden
layer:

    rho_layers, beta_layers     the penalties the blocks use (ρ_l, β_l)
    rho_target, beta_target     the balanced targets the applied penalties follow (see below)
    penalty_changes             how many times an applied penalty changed (int64, one entry)
    balance_residuals           the last measured (r_ρ, s_ρ, r_β, s_β) per hidden layer, shape (4, L-1)

The blocks read them through :func:`layer_penalties`; with per-layer values every block stays the
exact minimiser of the Lagrangian

    L = ‖z_{L,T} − y‖² + Σ_{l<L} Σ_t [(ρ_l/2)‖x_{l,t} − W_l a_{l-1,t}‖² + (β_l/2)‖a_{l,t} − h(z_{l,t})‖²]
        + Σ_t (ρ_L/2)‖x_{L,t} − W_L a_{L-1,t}‖² + ⟨λ, x_{L,T} − W_L a_{L-1,T}⟩

(the spike block of layer l sees ρ_l, β_l and the next layer's ρ_{l+1}; the potentials of layer l see
ρ_l and β_l; the hidden weight update does not depend on ρ_l, which multiplies both its data term and
its ridge). The output layer's ρ_L (``rho_out``), which is also the dual step, is never adapted, so λ
needs no rescaling when a hidden penalty changes.

**Residuals** (measured once per iteration, after the hidden sweep and the weight step, before the
re-projection: afterwards the hidden dynamics hold exactly). With x_l = z_l − δ z_{l,t-1} + θ a_{l,t-1}
the targets of layer l and "before" the values at the start of the iteration:

    primal (dynamics)   r_ρ,l = rms(x_l − W_l a_{l-1})
    dual   (dynamics)   s_ρ,l = ρ_l · rms(x_l − x_l^before)
    primal (spikes)     r_β,l = rms(a_l − h(z_l))
    dual   (spikes)     s_β,l = β_l · rms(h(z_l) − h(z_l^before))

rms over every (t, sample, neuron), summed over processes. s is Boyd's dual residual ρ Aᵀ B (z^{k+1} − z^k)
with B the map from the states to the constrained quantity (the targets x_l; the spikes h(z_l) for the
spike constraint) and the factor Aᵀ left out, so that r and s are in the same units (the membrane
potential, resp. spikes): the states play the part of Boyd's z-block. (With the default relative weight
step r_ρ is dominated by the step's change of the currents W_l a_{l-1} while the states hardly move in one
sweep, and the Heaviside barrier keeps h(z) in place, so balancing then only raises ρ and β.)

**Balancing** (``penalty_balance``), per layer, Boyd's rule with μ = ``balance_mu``, τ = ``balance_tau``
on the target ρ̂_l (likewise β̂_l from r_β, s_β):

    ρ̂_l ← τ ρ̂_l   if r_ρ,l > μ s_ρ,l        (constraints violated: penalise harder)
    ρ̂_l ← ρ̂_l / τ if s_ρ,l > μ r_ρ,l        (states still moving: penalise less)

and the applied ρ_l jumps to ρ̂_l only when max(ρ̂_l/ρ_l, ρ_l/ρ̂_l) ≥ ``balance_tolerance`` (OSQP's
rule: the matrices built from the penalties are re-formed only for a large change; below it the
penalties stay put, so they do not chatter). Both schedules read the per-layer values.

**Continuation** (``rho_growth``, ``beta_growth`` ≥ 1): after balancing, ρ_l ← g_ρ ρ_l and β_l ← g_β β_l
(applied values and targets alike), every iteration, so the relaxed states are pushed towards
binary spikes that obey the dynamics.

Both stay within [p / ``penalty_cap``, p · ``penalty_cap``] of the value p they started from (β, or
the layer's ρ_l = ρ·γ^(n−1−l) with γ = ``rho_decay``): continuation stops at the cap.

**Depth** (``rho_decay`` γ ≤ 1, without any adaptive feature): the hidden layers start from ρ_l =
ρ·γ^(n−1−l) and keep it; nothing is stored (:func:`depth_rho`).
"""

from __future__ import annotations

import torch

from ..network import heaviside
from .updates import targets

RHO, BETA = "rho_layers", "beta_layers"
RHO_TARGET, BETA_TARGET = "rho_target", "beta_target"
CHANGES = "penalty_changes"
RESIDUALS = "balance_residuals"


def active(settings) -> bool:
    """Whether per-layer penalties are kept (balancing or continuation on)."""
    return settings.penalty_balance != "off" or settings.rho_growth != 1.0 or settings.beta_growth != 1.0


def depth_rho(settings, l: int, n_hidden: int) -> float:
    """The starting dynamics penalty of hidden layer l of ``n_hidden``: ρ_l = ρ·γ^(n−1−l), γ =
    ``rho_decay`` (the top hidden layer keeps ρ; γ = 1: ρ for every layer)."""
    return settings.rho * settings.rho_decay ** (n_hidden - 1 - l)  # γ = 1: ρ·1.0 = ρ exactly


def layer_penalties(state, settings, l: int) -> tuple[float, float]:
    """(ρ_l, β_l) of hidden layer l (0-based): from ``state.aux`` when kept there, else the settings'
    (ρ_l from :func:`depth_rho`)."""
    rho, beta = state.aux.get(RHO), state.aux.get(BETA)
    return (depth_rho(settings, l, state.n_layers - 1) if rho is None else float(rho[l]),
            settings.beta if beta is None else float(beta[l]))


def lagrangian_penalties(state, settings):
    """(ρ, β) for :func:`lagrangian.lagrangian_terms`: the settings' floats, or per-layer lists."""
    if RHO not in state.aux:
        if settings.rho_decay == 1.0:
            return settings.rho, settings.beta
        n = state.n_layers - 1
        return [depth_rho(settings, l, n) for l in range(n)], [settings.beta] * n
    return [float(v) for v in state.aux[RHO]], [float(v) for v in state.aux[BETA]]


def ensure(state, settings) -> None:
    """Create the per-layer penalties in ``state.aux`` from the settings (once)."""
    if RHO in state.aux:
        return
    n = state.n_layers - 1
    rho = torch.tensor([depth_rho(settings, l, n) for l in range(n)], dtype=torch.float64)
    beta = torch.full((n,), float(settings.beta), dtype=torch.float64)
    state.aux.update({RHO: rho, BETA: beta, RHO_TARGET: rho.clone(), BETA_TARGET: beta.clone()})
    state.aux[CHANGES] = torch.zeros(1, dtype=torch.int64)


def balance_rule(target: float, r: float, s: float, mu: float, tau: float) -> float:
    """Boyd's residual balancing on one penalty: τ·p if r > μ s, p/τ if s > μ r, else p."""
    if r > mu * s:
        return target * tau
    if s > mu * r:
        return target / tau
    return target


def follow(applied: float, target: float, tolerance: float) -> float:
    """The applied penalty: the target when they differ by a factor ≥ ``tolerance``, else unchanged."""
    return target if max(target / applied, applied / target) >= tolerance else applied


def grow(value: float, growth: float, cap: float) -> float:
    """Continuation: value·growth, at most ``cap`` (never lowered by the cap)."""
    return max(value, min(value * growth, cap)) if growth > 1.0 else value


def snapshot(state, settings) -> dict | None:
    """What the dual residuals compare against: the hidden targets x_l (for ρ) and h(z_l) (for β) at the
    start of the iteration. None when balancing is off."""
    mode = settings.penalty_balance
    if mode == "off":
        return None
    snap = {"x": [], "h": []}
    for l in range(state.n_layers - 1):
        z, a = state.potentials[l], state.spikes[l]
        snap["x"].append(targets(z, a, settings.delta, settings.theta) if mode in ("rho", "both") else None)
        snap["h"].append(heaviside(z, settings.theta).bool() if mode in ("beta", "both") else None)
    return snap


def residual_sums(state, frames, settings, snap: dict, blocks) -> torch.Tensor:
    """Sums of squares (5, L-1) float64 over the samples of ``blocks``: ‖x − W a_in‖², ‖x − x_before‖²,
    ‖a − h(z)‖², ‖h(z) − h(z_before)‖², and the number of entries."""
    n = state.n_layers - 1
    out = torch.zeros(5, n, dtype=torch.float64, device=frames.device)
    delta, theta = settings.delta, settings.theta
    for sl in blocks:
        for l in range(n):
            z, a = state.potentials[l][:, sl], state.spikes[l][:, sl]
            if snap["x"][l] is not None:
                x = targets(z, a, delta, theta)
                u = state.layer_inputs(frames, l)[:, sl].to(state.weights[l].dtype) @ state.weights[l].T
                out[0, l] += (x - u).double().square().sum()
                out[1, l] += (x - snap["x"][l][:, sl]).double().square().sum()
            if snap["h"][l] is not None:
                h = heaviside(z, theta)
                out[2, l] += (a - h).double().square().sum()
                out[3, l] += (h.bool() != snap["h"][l][:, sl]).double().sum()
            out[4, l] += z.numel()
    return out


def update(state, frames, settings, snap: dict | None, reduce, blocks) -> None:
    """One iteration's penalty update: balancing from the residuals (``snap`` from :func:`snapshot`),
    then continuation. ``reduce`` sums over processes, ``blocks`` are the slices of local samples."""
    if not active(settings):
        return
    ensure(state, settings)
    aux, n = state.aux, state.n_layers - 1
    rho, beta = aux[RHO].tolist(), aux[BETA].tolist()
    rho_t, beta_t = aux[RHO_TARGET].tolist(), aux[BETA_TARGET].tolist()
    before = (list(rho), list(beta))
    base = [depth_rho(settings, l, n) for l in range(n)]  # each layer's starting ρ_l, the centre of its caps
    if snap is not None:
        sums = reduce(residual_sums(state, frames, settings, snap, blocks)).cpu()
        count = sums[4].clamp_min(1.0)
        rms = (sums[:4] / count).sqrt()
        res = torch.stack([rms[0], torch.tensor(rho, dtype=torch.float64) * rms[1],
                           rms[2], torch.tensor(beta, dtype=torch.float64) * rms[3]])
        aux[RESIDUALS] = res
        mu, tau, tol = settings.balance_mu, settings.balance_tau, settings.balance_tolerance
        lo_b, hi_b = settings.beta / settings.penalty_cap, settings.beta * settings.penalty_cap
        for l in range(n):
            if settings.penalty_balance in ("rho", "both"):
                lo_r, hi_r = base[l] / settings.penalty_cap, base[l] * settings.penalty_cap
                rho_t[l] = min(max(balance_rule(rho_t[l], float(res[0, l]), float(res[1, l]), mu, tau), lo_r), hi_r)
                rho[l] = follow(rho[l], rho_t[l], tol)
            if settings.penalty_balance in ("beta", "both"):
                beta_t[l] = min(max(balance_rule(beta_t[l], float(res[2, l]), float(res[3, l]), mu, tau), lo_b),
                                hi_b)
                beta[l] = follow(beta[l], beta_t[l], tol)
    for l in range(n):
        rho[l] = grow(rho[l], settings.rho_growth, base[l] * settings.penalty_cap)
        rho_t[l] = grow(rho_t[l], settings.rho_growth, base[l] * settings.penalty_cap)
        beta[l] = grow(beta[l], settings.beta_growth, settings.beta * settings.penalty_cap)
        beta_t[l] = grow(beta_t[l], settings.beta_growth, settings.beta * settings.penalty_cap)
    changed = sum(int(a != b) for a, b in zip(before[0] + before[1], rho + beta))
    aux[RHO], aux[BETA] = torch.tensor(rho, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)
    aux[RHO_TARGET] = torch.tensor(rho_t, dtype=torch.float64)
    aux[BETA_TARGET] = torch.tensor(beta_t, dtype=torch.float64)
    aux[CHANGES] = aux[CHANGES].cpu() + changed


def adaptive_metrics(state) -> dict:
    """Per-iteration report entries of the adaptive features, present only when they are on: the
    per-layer penalties, the last balancing residuals (r_ρ, s_ρ, r_β, s_β per layer) and the Anderson
    counts (accelerated points accepted, rejected)."""
    m = {}
    if RHO in state.aux:
        m["rho_layers"] = [float(v) for v in state.aux[RHO]]
        m["beta_layers"] = [float(v) for v in state.aux[BETA]]
    if RESIDUALS in state.aux:
        m["balance_residuals"] = [[float(v) for v in row] for row in state.aux[RESIDUALS]]
    if "anderson_stats" in state.aux:
        m["anderson_accepted"], m["anderson_rejected"] = (int(v) for v in state.aux["anderson_stats"])
    return m
