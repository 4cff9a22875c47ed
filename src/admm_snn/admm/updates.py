"""Closed-form block updates of the augmented Lagrangian (spec sections 2-3).

Every function here is pure: it takes current values and returns the new value of one block. Layout:
time-major tensors ``(T, N, n)``; index ``t`` below is 0-based (``t = 0`` is the spec's t = 1) and
``prev(x)[t] = x[t-1]`` with ``x[-1] = 0``.

Per-layer "targets" (the spec's shorthand x_{l,t}, what W_l a_{l-1,t} should equal):

    hidden:  x_{l,t} = z_{l,t} − δ z_{l,t-1} + θ a_{l,t-1}
    output:  x_{L,t} = z_{L,t} − δ z_{L,t-1}
"""

from __future__ import annotations

import math

from typing import NamedTuple

import torch

from ..errors import DivergenceError


def prev(x: torch.Tensor) -> torch.Tensor:
    """x shifted one step later in time: prev(x)[t] = x[t-1], prev(x)[0] = 0."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]], dim=0)


def targets(z: torch.Tensor, a: torch.Tensor | None, delta: float, theta: float) -> torch.Tensor:
    """x_t = z_t − δ z_{t-1} + θ a_{t-1} (hidden, ``a`` given) or z_t − δ z_{t-1} (output, ``a`` None).

    Computed row-shifted in one output buffer (no shifted copies of z and a); the values are those of
    ``z - δ·prev(z) + θ·prev(a)`` (at t = 0 the subtracted and added terms are zero)."""
    x = torch.empty_like(z)
    x[:1] = z[:1]
    if z.shape[0] > 1:
        torch.sub(z[1:], delta * z[:-1], out=x[1:])
        if a is not None:
            x[1:] += theta * a[:-1]
    return x


# ----------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------

#: Rows (pairs of time step and sample) per product of the cross sums when those products are formed in
#: a narrower dtype than the sums (see :func:`weight_statistics`): bounds the rounding of each product.
CROSS_PIECE_ROWS = 8192


def weight_statistics(inputs: torch.Tensor, x: torch.Tensor, dtype: torch.dtype,
                      dual: torch.Tensor | None = None, rho: float = 1.0, gram: bool = True,
                      cross_dtype: torch.dtype | None = None, gram_inputs: torch.Tensor | None = None,
                      piece_rows: int = CROSS_PIECE_ROWS):
    """The sums the weight update needs, over t and samples (they add across chunks and processes):

        G = Σ_t a_{l-1,t} a_{l-1,t}ᵀ,     C = Σ_t x_{l,t} a_{l-1,t}ᵀ  [+ (1/ρ) λ a_{L-1,T}ᵀ for the output]

    ``inputs`` (T, N, n) and ``x`` (T, N, m). Returns ``(G, C)`` in ``dtype`` (G is None when ``gram`` is
    False, e.g. for the fixed input Gram). ``inputs`` may be stored compactly (uint8 frames); it is
    converted once, here. With ``cross_dtype`` (default ``dtype``) different from ``dtype``, C's product
    is formed in ``cross_dtype`` over pieces of at most ``piece_rows`` (t, sample) rows and the pieces
    are added in ``dtype``: float32 products of float32 targets and binary inputs, summed in float64,
    stay within float32 rounding of one piece's sum of the float64 C (tests/test_updates.py), at a
    third of the float64 product's CPU cost. ``gram_inputs``: the inputs already in ``dtype``, if the
    caller has them.
    """
    T, m, n = x.shape[0], x.shape[-1], inputs.shape[-1]
    cdt = cross_dtype or dtype
    a = (inputs if gram_inputs is None else gram_inputs).reshape(-1, n).to(dtype) if gram or cdt == dtype else None
    if cdt == dtype:
        C = x.reshape(-1, m).to(dtype).T @ a
    else:
        a_c, x_c = inputs.reshape(-1, n).to(cdt), x.reshape(-1, m).to(cdt)
        C = torch.zeros(m, n, dtype=dtype, device=x.device)
        for s in range(0, x_c.shape[0], piece_rows):
            C.add_(x_c[s:s + piece_rows].T @ a_c[s:s + piece_rows])
    if dual is not None:
        C = C + (dual.to(dtype).T @ inputs.reshape(T, -1, n)[-1].to(dtype)) / rho  # the rows of t = T
    G = a.T @ a if gram else None
    return G, C


def ridge_value(G: torch.Tensor, ridge: float) -> float:
    """Absolute ridge μ = ridge · tr(G)/n added to G (at least a tiny floor so G + μI is definite)."""
    n = G.shape[0]
    scale = float(torch.diagonal(G).sum()) / max(n, 1)
    return ridge * scale + 1e-10 * max(scale, 1.0)


def plus_diagonal(G: torch.Tensor, value) -> torch.Tensor:
    """G + value·I as a new matrix (the same numbers as ``G + value * eye``, without forming the n×n
    identity and its multiple: two fewer n×n temporaries, 85 MB each for the float64 input Gram of
    N-MNIST)."""
    M = G.clone()
    M.diagonal().add_(value)
    return M


def ridge_tensor(G: torch.Tensor, ridge: float) -> torch.Tensor:
    """:func:`ridge_value` as a 0-dim tensor on G's device (the same arithmetic, in G's dtype), so that
    the weight update never waits for the device to report tr(G)."""
    n = G.shape[0]
    scale = torch.diagonal(G).sum() / max(n, 1)
    return ridge * scale + 1e-10 * scale.clamp(min=1.0)


def cholesky(M: torch.Tensor, what: str = "matrix") -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive definite M; retries with growing jitter, then fails
    with a one-line error (never an explicit inverse)."""
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) == 0:
        return L
    scale = float(torch.diagonal(M).abs().mean()) or 1.0
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    for k in range(-8, 0):
        L, info = torch.linalg.cholesky_ex(M + (10.0 ** k) * scale * eye)
        if int(info) == 0:
            return L
    raise DivergenceError(f"the {what} is not positive definite even with jitter; "
                          "raise --ridge or check the data for NaN/inf")


def solve_weights(G: torch.Tensor | None, C: torch.Tensor, ridge: float, factor: torch.Tensor | None = None,
                  anchor: torch.Tensor | None = None, mu=None):
    """W = (C + μ W₀)(G + μI)^{-1}, the exact minimiser of

        (ρ/2) Σ‖x − W a‖² + (ρμ/2)‖W − W₀‖²  [− ⟨λ, W a_T⟩ for the output]
    with W₀ = 0 (a ridge, the default) or W₀ = ``anchor`` (a proximal term: the previous weights).
    Solved as (G + μI) Wᵀ = (C + μW₀)ᵀ with a Cholesky factor (pass ``factor`` to reuse one, e.g. for
    the input layer whose Gram never changes, and ``mu`` = μ of that Gram to skip recomputing it; G
    may then be None). Returns ``(W, factor)``.
    """
    if mu is None and (factor is None or anchor is not None):
        mu = ridge_tensor(G, ridge)
    if factor is None:
        factor = cholesky(plus_diagonal(G, mu), "Gram matrix of the weight update")
    if anchor is not None:
        C = C + mu * anchor.to(C.dtype)
    W = torch.cholesky_solve(C.T.contiguous(), factor).T
    return W, factor


def extrapolate(W_prev: torch.Tensor, W_new: torch.Tensor, step: float, relative: bool = False) -> torch.Tensor:
    """W_prev + η (W_new − W_prev): η = 1 keeps the exact block minimiser; η > 1 extrapolates along the
    direction the block update found (over-relaxation; with the proximal weight update and a large
    ridge the direction is close to the gradient of the dynamics penalty, and η acts as a step size).
    With ``relative`` the step has a fixed length relative to the weights:
    η = step · ‖W_prev‖ / ‖W_new − W_prev‖, the same for every layer whatever its scale (η = 1 when
    W_prev = 0)."""
    D = W_new - W_prev
    if relative:
        norm = W_prev.norm()
        # from W = 0 (the paper's start) there is no scale yet: take the exact block step
        step = torch.where(norm > 0, step * norm / D.norm().clamp_min(1e-30), torch.ones_like(norm))
    return W_prev + step * D


def momentum_velocity(v: torch.Tensor | None, D: torch.Tensor, mu: float) -> torch.Tensor:
    """Heavy-ball velocity of the hidden weight step: v_k = μ v_{k−1} + D_k with D_k = g(W_k) − W_k the
    step of iteration k (the weights then move to W_k + v_k). Where the steps keep their direction the
    move is D/(1 − μ); where they alternate, the velocity cancels them. No velocity yet (or one of
    another shape, after a change of architecture): v = D."""
    if v is None or v.shape != D.shape:
        return D.clone()
    return mu * v.to(D.dtype) + D


# ----------------------------------------------------------------------------------------------------
# Spikes
# ----------------------------------------------------------------------------------------------------

def spike_matrices(W_next: torch.Tensor, theta: float, rho_own: float, rho_next: float, beta: float):
    """The two system matrices of the spike update of layer l (shared by every sample):

        t < T:  ρ_{l+1} WᵀW + (ρ_l θ² + β) I,      t = T:  ρ_{l+1} WᵀW + β I
    with W = W_{l+1} the next layer's weights, ρ_l the penalty of layer l's own dynamics and ρ_{l+1} that
    of the next layer's (with one ρ this is ρ times the spec's WᵀW + (θ² + β/ρ) I).
    """
    WtW = rho_next * (W_next.T @ W_next)
    return plus_diagonal(WtW, rho_own * theta ** 2 + beta), plus_diagonal(WtW, beta)


class WoodburyFactors(NamedTuple):
    """The spike systems M = ρ WᵀW + c I (c = ρ_l θ² + β for t < T, β for t = T) of a layer whose next
    layer has fewer neurons than it (W: (k, n), k < n), kept as the k×k Cholesky factors of
    c I_k + ρ W Wᵀ instead of the n×n factors of M (:func:`woodbury_factors`, :func:`woodbury_solve`)."""

    W: torch.Tensor
    rho: float
    diagonals: tuple
    factors: tuple


def low_rank(shape, beta: float, solver: str) -> bool:
    """Whether the spike systems of a layer whose next layer's weights have ``shape`` (k, n) (the next
    layer's neurons, this layer's) are solved through Woodbury's identity: the next layer has fewer than
    half as many neurons as this one (a hidden layer below the output, a conv layer below a pooled
    dense layer), β > 0 (so both systems are definite without WᵀW) and the solver needs no M (not "box").
    Per right-hand side that costs 4kn multiply-adds instead of the 2n² of the n×n triangular solves."""
    k, n = shape
    return solver != "box" and beta > 0 and 2 * k < n


def woodbury_factors(W_next: torch.Tensor, theta: float, rho_own: float, rho_next: float,
                     beta: float) -> WoodburyFactors:
    """The factors of :func:`spike_matrices`' two systems through the k×k matrices c I_k + ρ_{l+1} W Wᵀ
    (float64), W = W_{l+1}: (ρ WᵀW + c I)⁻¹ = (I − ρ Wᵀ (c I_k + ρ W Wᵀ)⁻¹ W) / c."""
    W64 = W_next.to(torch.float64)
    WWt = rho_next * (W64 @ W64.T)
    diagonals = (rho_own * theta ** 2 + beta, beta)
    factors = tuple(cholesky(plus_diagonal(WWt, c), "spike-update matrix") for c in diagonals)
    return WoodburyFactors(W_next, rho_next, diagonals, factors)


def woodbury_solve(f: WoodburyFactors, rhs: torch.Tensor, which: int) -> torch.Tensor:
    """a = M⁻¹ b for the rows b of ``rhs`` (R, n), M = ρ WᵀW + c I the system ``which`` (0: t < T,
    1: t = T): a = (b − ρ Wᵀ y) / c with (c I_k + ρ W Wᵀ) y = W b (Woodbury's identity, exact). The two
    products with W in the rows' dtype, the k×k solve in float64."""
    c = f.diagonals[which]
    W = f.W.to(rhs.dtype)
    Wb = (rhs @ W.T).to(torch.float64)
    y = torch.cholesky_solve(Wb.T, f.factors[which]).T.to(rhs.dtype)
    return (rhs - f.rho * (y @ W)) / c


def spike_rhs(W_next, c, d_next, h, theta, rho_own, rho_next, beta, dual=None, includes_last=True):
    """Right-hand sides of the spike update for all t at once (shape (T, N, n_l)):

        t < T:  ρ_{l+1} Wᵀ c_t − ρ_l θ d_{t+1} + β h(z_{l,t})
        t = T:  ρ_{l+1} Wᵀ c_T + β h(z_{l,T})  [+ Wᵀ λ when layer l+1 is the output]

    c = x_{l+1,t} (next layer's targets), d_next[t] = d_{t+1} = z_{l,t+1} − δ z_{l,t} − W_l a_{l-1,t+1}
    (own dynamics one step later without the reset; its last row is unused). With ``includes_last``
    False every row is a t < T row (used to update single time steps).
    """
    rhs = rho_next * (c @ W_next) + beta * h
    inner = slice(None, -1) if includes_last else slice(None)
    rhs[inner] -= (rho_own * theta) * d_next[inner]
    if dual is not None and includes_last:
        rhs[-1] += dual @ W_next
    return rhs


def box_qp(M: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, iterations: int,
           branch: bool | None = None) -> torch.Tensor:
    """argmin over [0,1]^n of ½ aᵀ M a − bᵀ a for each row of b (M shared), by projected accelerated
    gradient (FISTA with restart) from ``x0``. Exact in the limit; monotone in the objective."""
    if iterations == 0:
        return x0
    step = 1.0 / torch.linalg.eigvalsh(M)[-1]  # a 0-dim tensor: no wait for the device
    x, y, t_k = x0.clone(), x0.clone(), 1.0
    # On CPU a data-dependent branch costs nothing and skips the restart's extra product when no row got
    # worse; on an accelerator, testing ``worse.any()`` would stall the queue every iteration, so the
    # restart is always computed and selected row by row (``branch`` None: chosen by device). Both give
    # the same iterates.
    if branch is None:
        branch = x0.device.type == "cpu"

    def objective(v):
        return 0.5 * ((v @ M) * v).sum(-1) - (b * v).sum(-1)

    f_x = objective(x)
    for _ in range(iterations):
        x_new = (y - step * (y @ M - b)).clamp_(0.0, 1.0)
        f_new = objective(x_new)
        worse = f_new > f_x
        if not branch or bool(worse.any()):  # restart rows whose objective rose: projected gradient from x
            x_pg = (x - step * (x @ M - b)).clamp_(0.0, 1.0)
            x_new = torch.where(worse.unsqueeze(-1), x_pg, x_new)
            f_new = torch.where(worse, objective(x_pg), f_new)
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t_k * t_k) ** 0.5)
        y = x_new + ((t_k - 1.0) / t_next) * (x_new - x)
        x, f_x, t_k = x_new, f_new, t_next
    return x


def solve_spikes(M_inner: torch.Tensor, M_last: torch.Tensor, rhs: torch.Tensor, solver: str = "clip",
                 box_iterations: int = 50, factors=None) -> torch.Tensor:
    """Spikes a_{l,t} of one layer for all t: solve M a = rhs (M_inner for t < T, M_last for t = T) by
    Cholesky (or through Woodbury's identity when ``factors`` are :class:`WoodburyFactors`), then clip to [0, 1] ("clip", the paper), minimise exactly over the box ("box"), or keep
    the unconstrained minimiser ("free": spikes relaxed to all reals, so a silent neuron can be pushed
    further from firing as well as towards it)."""
    T, N, n = rhs.shape
    out = torch.empty_like(rhs)
    inner = rhs[:-1].reshape(-1, n)
    if isinstance(factors, WoodburyFactors):  # ``factors`` from woodbury_factors (M_inner, M_last unused)
        if solver == "box":
            raise ValueError("the box spike solver needs the spike matrices, not Woodbury factors")
        if inner.numel():
            out[:-1] = woodbury_solve(factors, inner, 0).reshape(T - 1, N, n)
        out[-1] = woodbury_solve(factors, rhs[-1], 1)
    else:
        if factors is None:
            factors = (cholesky(M_inner, "spike-update matrix"), cholesky(M_last, "spike-update matrix"))
        if inner.numel():
            out[:-1] = torch.cholesky_solve(inner.T, factors[0]).T.reshape(T - 1, N, n)
        out[-1] = torch.cholesky_solve(rhs[-1].T, factors[1]).T
    if solver == "free":
        return out
    out.clamp_(0.0, 1.0)
    if solver == "box":
        if inner.numel():
            out[:-1] = box_qp(M_inner, inner, out[:-1].reshape(-1, n), box_iterations).reshape(T - 1, N, n)
        out[-1] = box_qp(M_last, rhs[-1], out[-1], box_iterations)
    return out


# ----------------------------------------------------------------------------------------------------
# Hidden potentials
# ----------------------------------------------------------------------------------------------------

def heaviside_subroutine(z_star, f_star, f_theta, a, theta, rho, beta, eps):
    """Exact minimiser of C(z) = (ρ/2) f(z) + (β/2)(a − h(z))² given the unconstrained minimiser z* of
    the convex quadratic f, f(z*) and f(θ) (elementwise):

        Δ1 = β (1 − 2a),  Δ2 = ρ (f(z*) − f(θ)) ≤ 0
        z* > θ and Δ1 + Δ2 > 0  →  θ         (not spiking is cheaper)
        z* ≤ θ and Δ2 − Δ1 > 0  →  θ + ε     (spiking is cheaper)
        otherwise               →  z*
    """
    d1 = torch.mul(a, -2.0).add_(1.0).mul_(beta)  # β (1 − 2a), rounded as written ((−2)·a = −(2a) exactly)
    d2 = torch.sub(f_star, f_theta).mul_(rho)
    above = z_star > theta
    # masks and in-place fills instead of torch.where: the same values (a Python number is cast to the
    # dtype of z* as torch.where casts it), with no data-dependent selection over a float tensor (torch.where
    # with a random mask is several times slower than an addition on CPU)
    s = torch.add(d1, d2)
    off = s > 0  # z* > θ and Δ1 + Δ2 > 0: θ
    off &= above
    torch.sub(d2, d1, out=s)
    on = s > 0  # z* ≤ θ and Δ2 − Δ1 > 0: θ + ε
    on &= above.logical_not_()
    out = z_star.clone()
    out.masked_fill_(off, float(theta))
    return out.masked_fill_(on, float(theta + eps))


def potential_terms(z, a, u, t, delta, theta):
    """For the time indices ``t`` (a 1-D index tensor) of one hidden layer, with u = W_l a_{l-1}:

        q = δ z_{t-1} + u_t − θ a_{t-1}           (what the dynamics predict)
        r = z_{t+1} − u_{t+1} + θ a_t             (for t < T; zero at t = T, where it is unused)
    Returns ``(q, r, last)`` with ``last`` a boolean (len(t), 1, 1) mask of t = T.
    """
    T = z.shape[0]
    zp, ap = prev(z), prev(a)
    q = delta * zp[t] + u[t] - theta * ap[t]
    tn = (t + 1).clamp(max=T - 1)
    last = (t == T - 1).view(-1, 1, 1)
    r = torch.where(last, torch.zeros_like(q), z[tn] - u[tn] + theta * a[t])
    return q, r, last


def update_potentials(z, a, u, t, delta, theta, rho, beta, eps):
    """New hidden potentials z_{l,t} at the time indices ``t`` (which must not be neighbours):

        f(z) = (z − q)² + (r − δ z)²,  z* = (q + δ r)/(1 + δ²)   for t < T
        f(z) = (z − q)²,               z* = q                    for t = T
    followed by :func:`heaviside_subroutine` with the current spikes a_{l,t}.
    """
    q, r, last = potential_terms(z, a, u, t, delta, theta)
    k = torch.where(last, torch.zeros_like(q), torch.ones_like(q))  # 1 where the t+1 term exists
    z_star = (q + k * delta * r) / (1.0 + k * delta * delta)

    def f(v):
        return (v - q) ** 2 + k * (r - delta * v) ** 2

    return heaviside_subroutine(z_star, f(z_star), f(torch.full_like(q, theta)), a[t], theta, rho, beta, eps)


def update_potentials_parity(z, a, u, parity: int, delta, theta, rho, beta, eps) -> torch.Tensor:
    """:func:`update_potentials` for every other time step t = parity, parity + 2, ... (one half of a
    red-black sweep), the same formulas in the same floating-point order, but on strided views of z, a
    and u instead of gathered and shifted copies. Returns the new z at those t, shape (len, N, n)."""
    T = z.shape[0]
    u_t, a_t = u[parity::2], a[parity::2]
    n_t = u_t.shape[0]
    if n_t == 0:
        return z[parity::2].clone()
    # q = δ z_{t-1} + u_t − θ a_{t-1}   (z_{-1} = a_{-1} = 0, so q = u at t = 0)
    q = torch.empty_like(u_t)
    tmp = torch.empty_like(u_t)  # one scratch buffer for the products below (no temporary per operation)
    first = 1 if parity == 0 else 0
    if first:
        q[0] = u[0]
    k = n_t - first
    if k:
        start = parity - 1 + 2 * first
        qk = q[first:]
        torch.mul(z[start::2][:k], delta, out=qk)
        qk += u_t[first:]
        qk -= torch.mul(a[start::2][:k], theta, out=tmp[first:])
    # rows with t < T: r = z_{t+1} − u_{t+1} + θ a_t,  z* = (q + δ r)/(1 + δ²)
    last_in = (T - 1 - parity) % 2 == 0
    m = n_t - (1 if last_in else 0)
    z_star = q.clone()  # z* = q at t = T
    f_star = torch.zeros_like(q) if last_in else torch.empty_like(q)
    f_theta = torch.empty_like(q)
    torch.sub(theta, q, out=f_theta)
    f_theta.square_()  # (θ − q)², all of f(θ) at t = T
    if m:
        dt, dev = z.dtype, z.device
        r = torch.sub(z[parity + 1::2][:m], u[parity + 1::2][:m])
        t_m = tmp[:m]
        r += torch.mul(a_t[:m], theta, out=t_m)
        den = torch.ones((), dtype=dt, device=dev) * delta * delta + 1.0  # 1 + δ², rounded like the reference
        zs = z_star[:m]
        torch.mul(r, delta, out=zs)
        zs += q[:m]
        zs /= den
        fs = f_star[:m]
        torch.sub(zs, q[:m], out=fs)
        fs.square_()
        fs += torch.sub(r, torch.mul(zs, delta, out=t_m), out=t_m).square_()
        dtheta = float(torch.tensor(delta, dtype=dt) * theta)  # δ·θ as the reference's δ·full(θ)
        f_theta[:m] += torch.sub(r, dtheta, out=t_m).square_()
    return heaviside_subroutine(z_star, f_star, f_theta, a_t, theta, rho, beta, eps)


# ----------------------------------------------------------------------------------------------------
# Output potentials and dual
# ----------------------------------------------------------------------------------------------------

def update_output_potentials_at(z, u, y, dual, t, delta, rho):
    """Output potentials at the (non-neighbouring) time indices ``t``, each the exact minimiser given
    the rest, with s = δ z_{L,t-1} + u_t, r = z_{L,t+1} − u_{t+1}, u = W_L a_{L-1}:

        t < T:  z = (s + δ r + [t = T−1] δ λ/ρ) / (1 + δ²)
        t = T:  z = (ρ s + 2y − λ) / (2 + ρ)
    """
    T = z.shape[0]
    s = delta * prev(z)[t] + u[t]
    tn = (t + 1).clamp(max=T - 1)
    r = z[tn] - u[tn]
    inner = (s + delta * r + (t == T - 2).to(s.dtype).view(-1, 1, 1) * (delta / rho) * dual) / (1.0 + delta * delta)
    final = (rho * s + 2.0 * y - dual) / (2.0 + rho)
    return torch.where((t == T - 1).view(-1, 1, 1), final, inner)


def loss_times(T: int, steps: int = 1) -> list[int]:
    """The output loss's time steps 𝒯 (0-based, ascending): K = min(steps, T) steps spread evenly over the
    T frames and ending at the last, t_j = T − 1 − ⌊j·T/K + ½⌋ for j = 0..K−1 (K = 1: [T − 1], the loss
    on z_{L,T} alone; T = 30, K = 3: [9, 19, 29])."""
    K = max(1, min(int(steps), int(T)))
    return sorted({T - 1 - math.floor(j * T / K + 0.5) for j in range(K)})


def output_system(T: int, delta: float, rho: float, dtype, device, times: list[int] | None = None):
    """Cholesky factor of the T×T matrix A = ρ DᵀD + 2 Σ_{t∈𝒯} e_t e_tᵀ of the joint output solve, with D
    the bidiagonal (Dz)_t = z_t − δ z_{t-1} and 𝒯 = ``times`` (None: the last step only). A is
    tridiagonal and the same for every sample and neuron."""
    D = torch.eye(T, dtype=dtype, device=device) - delta * torch.diag(torch.ones(T - 1, dtype=dtype, device=device), -1)
    A = rho * D.T @ D
    for t in ([T - 1] if times is None else times):
        A[t, t] += 2.0
    return D, cholesky(A, "output system")


def solve_output_potentials(u, y, dual, delta, rho, system=None, times: list[int] | None = None):
    """All output potentials z_{L,1..T} at once: the exact minimiser of

        (ρ/2) ‖D z − u‖² + ‖z_T − y‖² + ⟨λ, (D z)_T⟩   →   (ρ DᵀD + 2 e_T e_Tᵀ) z = ρ Dᵀu + 2 y e_T − λ Dᵀe_T
    for every sample and output neuron (u = W_L a_{L-1}, shape (T, N, n_L)). With ``times`` 𝒯 (a
    ``system`` built with the same times) the loss is Σ_{t∈𝒯} ‖z_t − y_t‖², ``y`` then (|𝒯|, N, n_L):
    (ρ DᵀD + 2 Σ_{t∈𝒯} e_t e_tᵀ) z = ρ Dᵀu + 2 Σ_{t∈𝒯} y_t e_t − λ Dᵀe_T.
    """
    T, N, n = u.shape
    D, factor = system if system is not None else output_system(T, delta, rho, u.dtype, u.device, times)
    D, factor = D.to(u.dtype), factor.to(u.dtype)
    rhs = rho * torch.einsum("st,snk->tnk", D, u)
    if times is None:
        rhs[-1] += 2.0 * y
    else:
        rhs[times] += 2.0 * y.to(u.dtype)
    rhs -= D[-1].view(T, 1, 1) * dual.unsqueeze(0)
    return torch.cholesky_solve(rhs.reshape(T, N * n), factor).reshape(T, N, n)


def leaky_sums_at(a: torch.Tensor, delta: float, times: list[int]) -> torch.Tensor:
    """S_t = Σ_{s≤t} δ^{t−s} a_s for t ∈ 𝒯 (shape (|𝒯|, N, n)), in a's dtype: what a leaky integrator
    driven by ``a`` holds at each loss step, per unit of weight (the recurrence S_t = δ S_{t-1} + a_t)."""
    out = torch.empty((len(times),) + tuple(a.shape[1:]), dtype=a.dtype, device=a.device)
    S, j = torch.zeros_like(a[0]), 0
    for t in range(times[-1] + 1):
        S = S.mul_(delta).add_(a[t])
        if t == times[j]:
            out[j] = S
            j += 1
    return out


def loss_weighting(T: int, delta: float, rho: float, times: list[int], dtype=torch.float64, device=None):
    """L (|𝒯|×|𝒯|, lower triangular) with L Lᵀ = Q = (I + (2/ρ) R Rᵀ)^{-1}, R the rows 𝒯 of D^{-1}
    ((D^{-1})_{ts} = δ^{t−s} for s ≤ t). Eliminating the potentials from the output block with the loss at
    the steps 𝒯, per output neuron and sample (v = D z = W a + e, so z_𝒯 = S_𝒯 w + R e):

        min_e (ρ/2)‖e‖² + ‖S_𝒯 w + R e − τ‖²  =  (τ − S_𝒯 w)ᵀ Q (τ − S_𝒯 w)     (Woodbury)
    a generalised least squares in W_L; with 𝒯 = {T}, Q = ρ/(ρ + 2 Σ_t δ^{2(T−t)}), the scalar of
    :func:`joint_output_statistics`."""
    t = torch.arange(T, dtype=dtype, device=device)
    lag = t.view(-1, 1) - t.view(1, -1)
    Dinv = torch.where(lag >= 0, torch.as_tensor(delta, dtype=dtype, device=device) ** lag.clamp(min=0),
                       torch.zeros((), dtype=dtype, device=device))
    R = Dinv[times]
    k = len(times)
    Q = torch.linalg.inv(torch.eye(k, dtype=dtype, device=device) + (2.0 / rho) * (R @ R.T))
    return cholesky(0.5 * (Q + Q.T), "loss weighting")


def whitened(S: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Lᵀ S over the loss steps (S: (|𝒯|, N, n) → (|𝒯|, N, n)): Σ_k (LᵀS)_kᵀ (LᵀS)_k = Sᵀ Q S per sample."""
    return torch.einsum("jk,jnf->knf", L.to(S.dtype), S)


def multistep_gram(S_white: torch.Tensor) -> torch.Tensor:
    """G = Σ_samples S_𝒯ᵀ Q S_𝒯 (n × n) from the whitened leaky sums LᵀS (|𝒯|, N, n) (:func:`whitened`): the
    Gram of the output block with the loss at the steps 𝒯; it adds across chunks and processes."""
    rows = S_white.reshape(-1, S_white.shape[-1])
    return rows.T @ rows


def multistep_cross(S_white: torch.Tensor, tau: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """C = Σ_samples τᵀ Q S_𝒯 (n_L × n) for the targets τ (|𝒯|, N, n_L), so that W_L solves
    (G + μI) W_Lᵀ = Cᵀ (:func:`solve_weights`) with G = :func:`multistep_gram`; it adds across chunks and
    processes."""
    rows = S_white.reshape(-1, S_white.shape[-1])
    t = whitened(tau.to(S_white.dtype), L).reshape(-1, tau.shape[-1])
    return t.T @ rows


def gated_targets(u: torch.Tensor, a_fwd: torch.Tensor, a: torch.Tensor, z_fwd: torch.Tensor, theta: float,
                  k: float) -> torch.Tensor:
    """Gated weight targets of a hidden layer (settings.target_gate = k):

        x_t = u_t + θ g_{t-1} (a_{t-1} − a_fwd,{t-1}),   g = 1 / (1 + k |z_fwd − θ|)²
    with u = W_l a_{l-1} the forward currents, a_fwd and z_fwd the forward spikes and potentials the
    sweep started from and a the spike block's result (t = 0: x_0 = u_0). With k = 0 (g = 1) this is the
    target the reset term carries when the potentials keep their forward values."""
    g = torch.sub(z_fwd, theta).abs_().mul_(k).add_(1.0).pow_(-2)  # in place: the same operations in order
    d = torch.sub(a, a_fwd).mul_(g).mul_(theta)
    del g
    x = torch.empty_like(u)
    torch.add(u[0], 0.0, out=x[0])  # u_0 + θ·0, as u + θ·prev(·) rounds it (−0 + 0 = +0)
    torch.add(u[1:], d[:-1], out=x[1:])
    return x


def margin_targets(z_last: torch.Tensor, y: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """τ = argmin over {τ_c ≥ margin where y_c = 1, τ_c ≤ 0 where y_c = 0} of ‖z_{L,T} − τ‖²: the
    projection max(z, margin) on the true class, min(z, 0) elsewhere. Minimising ‖z − τ‖² over τ leaves
    the squared hinge Σ_c max(0, margin − z_y)² + Σ_{c≠y} max(0, z_c)² of the output potentials."""
    z = z_last.to(y.dtype)
    return torch.where(y > 0, z.clamp(min=margin), z.clamp(max=0.0))


def leaky_sum(a: torch.Tensor, delta: float) -> torch.Tensor:
    """S = Σ_t δ^{T−t} a_t (shape (N, n)): what a leaky integrator driven by ``a`` holds at T, per unit
    of weight."""
    T = a.shape[0]
    k = delta ** torch.arange(T - 1, -1, -1, dtype=a.dtype, device=a.device)
    return torch.einsum("t,tnk->nk", k, a)


def joint_output_statistics(a: torch.Tensor, y: torch.Tensor, dual: torch.Tensor, delta: float, rho: float,
                            dtype: torch.dtype):
    """Sums for the exact joint minimiser over (W_L, z_{L,1..T}) of the output block (they add across
    chunks and processes): G_S = Σ S Sᵀ and C_S = Σ (y + λ/ρ) Sᵀ with S = Σ_t δ^{T−t} a_{L-1,t}.

    Eliminating the potentials (v = D z = W a + e, e optimal) leaves, with K = Σ_t δ^{2(T−t)},

        min_W  (ρ / (ρ + 2K)) Σ ‖W S − y − λ/ρ‖² + (ρμ/2) ‖W‖²
    a ridge regression of y + λ/ρ on the leaky sums S; the potentials then follow from
    :func:`solve_output_potentials` with the new W.
    """
    return joint_output_sums(leaky_sum(a.to(dtype), delta), y, dual, rho)


def joint_output_sums(S: torch.Tensor, y: torch.Tensor, dual: torch.Tensor, rho: float):
    """(G_S, C_S) = (Σ S Sᵀ, Σ (y + λ/ρ) Sᵀ) from given leaky sums ``S`` (N, n) in the sums' dtype."""
    return S.T @ S, (y.to(S.dtype) + dual.to(S.dtype) / rho).T @ S


def joint_output_ridge(G: torch.Tensor, ridge: float, delta: float, rho: float, T: int) -> tuple[float, float]:
    """(μ_S, μ): μ_S = ridge·tr(G_S)/n is added to G_S; it is the weight decay (ρμ/2)‖W‖² of the
    Lagrangian with μ_S = μ (ρ + 2K) / 2, K = Σ_t δ^{2(T−t)}."""
    K = sum(delta ** (2 * j) for j in range(T))
    mu_S = ridge_value(G, ridge)
    return mu_S, 2.0 * mu_S / (rho + 2.0 * K)


def dual_residual_output(z_out, u_last, delta):
    """r_λ = z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T} (the exact constraint's violation), shape (N, n_L)."""
    zp = z_out[-2] if z_out.shape[0] > 1 else torch.zeros_like(z_out[-1])
    return z_out[-1] - delta * zp - u_last


def update_dual(dual, z_out, u_last, delta, rho):
    """λ ← λ + ρ (z_{L,T} − δ z_{L,T-1} − W_L a_{L-1,T})."""
    return dual + rho * dual_residual_output(z_out, u_last, delta)


def check_finite(tensor: torch.Tensor, block: str, iteration: int) -> None:
    """Raise :class:`DivergenceError` naming the block and iteration when ``tensor`` has NaN or inf."""
    if not bool(torch.isfinite(tensor).all()):
        raise DivergenceError(f"training diverged at iteration {iteration}: {block} has NaN or infinite "
                              "values; lower --rho/--beta or raise --ridge")


def check_all_finite(blocks: list[tuple[torch.Tensor, str]], iteration: int) -> None:
    """:func:`check_finite` for several tensors with one wait for the device (one host synchronisation):
    the per-tensor checks are stacked and read once; only on failure is each block examined to name it."""
    flags = torch.stack([torch.isfinite(t).all() for t, _ in blocks])
    if bool(flags.all()):
        return
    for t, name in blocks:
        check_finite(t, name, iteration)


__all__ = [name for name in dir() if not name.startswith("_")]
