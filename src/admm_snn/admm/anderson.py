"""Safeguarded type-II Anderson acceleration of the ADMM iteration, on the hidden weights.

**What is accelerated.** With re-projection (the default) every iteration starts from the forward
simulation of the hidden weights, and the output block is the exact fit to those states: one iteration
is a map of the hidden weights alone, x = (W_1, ..., W_{L-1}) flattened,

    T(x) = the hidden weights after one sweep of exact blocks (the ADMM map),
    g(x) = x + η_x (T(x) − x)   the configured step (``step_rule``, ``weight_step``; g = T for η = 1),

and Anderson acceleration (``anderson`` = memory m > 0) extrapolates the fixed-point iteration x ← g(x).
Only the hidden weights are accelerated: the output weights are re-solved from the states in every
iteration, and the states would cost m state-sized copies. Without re-projection (the paper preset) the
states carry information between iterations too, so the map is not one of the weights alone and the
acceleration is a heuristic there (the safeguard below still applies).

**Type-II step** (Walker & Ni 2011), with f_i = g(x_i) − x_i and the differences of the last m accepted
iterates ΔF = [f_{i+1} − f_i], ΔG = [g(x_{i+1}) − g(x_i)] (columns):

    γ = argmin_γ ‖f_k − ΔF γ‖² + ε ‖ΔF‖²_F/m ‖γ‖²      (ε = REGULARISATION, a tiny Tikhonov term)
    x_{k+1} = g(x_k) − ΔG γ

**Safeguard.** The combined residual of the ADMM map, R(x) = ‖T(x) − x‖ over every hidden weight, is
evaluated at the accelerated point by the next iteration. If R(x_AA) > R(x_k) the accelerated point is
rejected: the iteration returns the plain step g(x_k) from the last accepted point (stored), and the next
iteration continues from there. (The residual is that of the ADMM map T, not of g: with the relative step
rule ‖g(x) − x‖ = η‖x‖ says nothing about convergence.) A non-finite candidate is never proposed.

History (``state.aux``, checkpointed, so a resumed run continues bitwise): ``anderson_dF``,
``anderson_dG`` (k ≤ m rows, float64), ``anderson_f``, ``anderson_g`` (f and g(x) of the last accepted
iterate), ``anderson_res`` (its R), ``anderson_pending`` (1 while the current weights are an accelerated
point awaiting the check) and ``anderson_stats`` (accepted, rejected accelerated points).
"""

from __future__ import annotations

import torch

REGULARISATION = 1e-10

DF, DG, F, G, RES, PENDING, STATS = ("anderson_dF", "anderson_dG", "anderson_f", "anderson_g", "anderson_res",
                                     "anderson_pending", "anderson_stats")


def flatten(weights) -> torch.Tensor:
    """The weights as one float64 vector."""
    return torch.cat([w.reshape(-1).to(torch.float64) for w in weights])


def unflatten(vector: torch.Tensor, like) -> list[torch.Tensor]:
    """Split ``vector`` back into tensors shaped (and typed) like ``like``."""
    out, s = [], 0
    for w in like:
        out.append(vector[s:s + w.numel()].view(w.shape).to(w.dtype))
        s += w.numel()
    return out


def type2_step(dF: torch.Tensor, dG: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
               reg: float = REGULARISATION) -> torch.Tensor:
    """x_new = g − ΔGᵀγ with γ = argmin ‖f − ΔFᵀγ‖² + reg·(‖ΔF‖²_F/k)‖γ‖² (rows of dF, dG are the k
    differences), solved from the k×k normal equations."""
    M = dF @ dF.T
    k = M.shape[0]
    M = M + (reg * float(M.diagonal().sum()) / k + 1e-300) * torch.eye(k, dtype=M.dtype, device=M.device)
    gamma = torch.linalg.solve(M, dF @ f)
    return g - dG.T @ gamma


def accelerate(aux: dict, x: torch.Tensor, Tx: torch.Tensor, gx: torch.Tensor, m: int,
               reg: float = REGULARISATION) -> tuple[torch.Tensor, bool | None]:
    """One safeguarded Anderson step. ``x`` the current iterate, ``Tx`` the ADMM map at x, ``gx`` the
    plain step at x (all flat float64). Updates the history in ``aux``; returns the next iterate and
    whether x (an accelerated point) was accepted (True), rejected (False), or was a plain point (None)."""
    stats = aux.get(STATS, torch.zeros(2, dtype=torch.int64)).cpu().clone()
    res = float((Tx - x).norm())
    pending = PENDING in aux and int(aux[PENDING]) == 1
    verdict = None
    if pending:
        if res > float(aux[RES]):  # the accelerated point made the residual worse: take the plain step
            stats[1] += 1
            aux[STATS], aux[PENDING] = stats, torch.zeros(1, dtype=torch.int64)
            return aux[G].clone(), False
        stats[0] += 1
        verdict = True
    f = gx - x
    if F in aux:
        df, dg = (f - aux[F]).unsqueeze(0), (gx - aux[G]).unsqueeze(0)
        aux[DF] = torch.cat([aux[DF], df])[-m:] if DF in aux else df
        aux[DG] = torch.cat([aux[DG], dg])[-m:] if DG in aux else dg
    aux[F], aux[G], aux[RES] = f, gx.clone(), torch.tensor([res], dtype=torch.float64)
    aux[STATS] = stats
    nxt = gx
    if DF in aux:
        cand = type2_step(aux[DF], aux[DG], f, gx, reg)
        if bool(torch.isfinite(cand).all()):
            nxt = cand
    aux[PENDING] = torch.tensor([1 if nxt is not gx else 0], dtype=torch.int64)
    return nxt, verdict


def apply(state, previous, exact, settings) -> None:
    """The hook of :func:`solver.iterate`: ``previous`` the hidden weights at the start of the iteration
    (x), ``exact`` those after the sweep of exact blocks (T(x)); ``state.weights`` holds g(x) (after the
    weight step) and is replaced by the next iterate."""
    hidden = state.weights[:-1]
    if not hidden:  # no hidden layer: the iteration is the exact output fit, nothing to accelerate
        return
    x, Tx, gx = flatten(previous), flatten(exact), flatten(hidden)
    nxt, _ = accelerate(state.aux, x, Tx, gx, settings.anderson)
    state.weights[:-1] = unflatten(nxt, hidden)
