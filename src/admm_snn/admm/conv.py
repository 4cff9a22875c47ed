"""The blocks of a convolutional LIF layer: the maths only (not yet wired into the solver or the CLI).

A convolutional hidden layer l has weights W (C_out, C_in, k, k) and currents u_t = W ∗ a_{l-1,t}
(2-D cross-correlation, ``torch.nn.functional.conv2d``, with a stride and a zero padding); a pooling
layer before it is linear, so the operator from the spikes below to the currents is

    A a = W ∗ pool(a),        pool = sum or average over p×p windows (or none),

and everything the dense blocks need has a convolutional counterpart here:

- **Weights** (:func:`patch_sums`, :func:`solve_conv_weights`): with P_t = unfold(pool(a_t)) the
  (positions × C_in·k²) patch matrix, u_t = P_t W_flatᵀ, so the weight block is the dense block's least
  squares over the kernel, with the patch Gram G = Σ_{t,samples} P_tᵀ P_t ((C_in k²)² entries) and the
  cross sums C = Σ X_tᵀ P_t, summed over positions, time, samples (and processes: plain sums):
  W_flat = (C + μ W₀)(G + μI)^{-1}, exactly :func:`updates.solve_weights`.
- **Spikes of the layer below** (:func:`solve_spikes_cg`): the spike block's normal equations
  (βI + ρ AᵀA) a = b couple every position of a sample, so instead of a factorisation they are solved
  matrix-free by conjugate gradients, with A (conv of the pooled spikes) and Aᵀ (the adjoint:
  ``conv_transpose2d`` then the pooling's adjoint) as the only operations. CG, not an FFT
  diagonalisation: the stride, the zero padding and the pooling make AᵀA block-Toeplitz at best, not
  circulant, so an FFT would solve a different (periodic) problem; CG solves this one, to the relative
  residual ``tol`` it is given (tests/test_conv.py checks it against the dense solve).
- **Potentials** stay element-wise (the dense layer's red-black update applies unchanged).

Shapes: spikes a (B, C_in, H, W) per time step (time and samples flattened into B by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..arch import ConvSpec, DenseSpec, PoolSpec, parse_arch  # noqa: F401  (re-exported: the layer specs live below the engine)
from ..conv_network import conv_forward, pool  # noqa: F401  (re-exported: the forward operator is the network's)
from ..errors import SettingsError
from . import updates as U


# ----------------------------------------------------------------------------------------------------
# The linear operator A a = W ∗ pool(a) and its adjoint
# ----------------------------------------------------------------------------------------------------

def pool_adjoint(g: torch.Tensor, size: int, shape: tuple, mode: str = "sum") -> torch.Tensor:
    """The adjoint of :func:`pool` for inputs of ``shape`` (B, C, H, W): each window's value copied back
    to its size² inputs (divided by size² for average pooling); inputs outside every window get 0."""
    if size == 1:
        return g
    up = g.repeat_interleave(size, dim=-2).repeat_interleave(size, dim=-1)
    if mode != "sum":
        up = up / (size * size)
    out = g.new_zeros(shape)
    out[..., :up.shape[-2], :up.shape[-1]] = up
    return out


def conv_adjoint(g: torch.Tensor, W: torch.Tensor, in_shape: tuple, stride: int = 1, padding: int = 0,
                 pool_size: int = 1, pool_mode: str = "sum") -> torch.Tensor:
    """Aᵀ g for spikes of ``in_shape`` (B, C_in, H, W): the transposed convolution (with the output
    padding that restores the pooled size), then the pooling's adjoint. ⟨A a, g⟩ = ⟨a, Aᵀ g⟩."""
    B, C, H, Wd = in_shape
    Hp, Wp = (H // pool_size, Wd // pool_size) if pool_size > 1 else (H, Wd)
    k = W.shape[-1]
    out_h = (Hp + 2 * padding - k) // stride + 1
    out_w = (Wp + 2 * padding - k) // stride + 1
    extra = (Hp - ((out_h - 1) * stride - 2 * padding + k), Wp - ((out_w - 1) * stride - 2 * padding + k))
    h = F.conv_transpose2d(g, W, stride=stride, padding=padding, output_padding=extra)
    return pool_adjoint(h, pool_size, in_shape, pool_mode)


# ----------------------------------------------------------------------------------------------------
# The weight block
# ----------------------------------------------------------------------------------------------------

def patches(a: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0, pool_size: int = 1,
            pool_mode: str = "sum") -> torch.Tensor:
    """P (B·positions, C_in·k²): the unfolded patches of pool(a), one row per output position, in the
    order of conv2d's output (so u.permute(0, 2, 3, 1).reshape(-1, C_out) = P W_flatᵀ)."""
    cols = F.unfold(pool(a, pool_size, pool_mode), kernel, padding=padding, stride=stride)  # (B, C k², L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def patch_sums(a: torch.Tensor, x: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0,
               pool_size: int = 1, pool_mode: str = "sum", dtype=torch.float64, gram: bool = True):
    """(G, C) of the conv weight block for one block of rows: G = Σ PᵀP over positions and rows of the
    batch, C = Σ X P with X the targets (B, C_out, H', W') laid out as conv2d's output; both in ``dtype``.
    Sums over time, samples, chunks and processes are plain additions of these. C always comes from
    :func:`cross_sums` (in x's dtype, then ``dtype``), so it is the same whether G is formed or not;
    ``gram`` False: G is None (the caller keeps the Gram of inputs that do not change, such as the
    frames) and no patch matrix is formed."""
    C = cross_sums(a, x, kernel, stride, padding, pool_size, pool_mode).to(dtype)
    if not gram:
        return None, C
    P = patches(a, kernel, stride, padding, pool_size, pool_mode).to(dtype)
    return P.T @ P, C


def cross_sums(a: torch.Tensor, x: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0,
               pool_size: int = 1, pool_mode: str = "sum") -> torch.Tensor:
    """C = Σ X P (C_out, C_in·k²) for one block of images, in x's dtype, without forming the patches P:
    C[o, (i, u, v)] = Σ_{b, h, w} x[b, o, h, w] · pool(a)[b, i, h·s + u − p, w·s + v − p], the gradient of
    the convolution with respect to its kernel (``torch.nn.grad.conv2d_weight``), flattened in unfold's
    (C_in, k, k) order. The caller adds blocks of images in float64 (as the dense cross sums: products in
    float32 over a block, sums of blocks in float64)."""
    inputs = pool(a, pool_size, pool_mode).to(x.dtype)
    shape = (x.shape[1], inputs.shape[1], kernel, kernel)
    g = torch.nn.grad.conv2d_weight(inputs, shape, x, stride=stride, padding=padding)
    return g.reshape(shape[0], -1)


def solve_conv_weights(G: torch.Tensor, C: torch.Tensor, shape: tuple, ridge: float,
                       anchor: torch.Tensor | None = None) -> torch.Tensor:
    """W (C_out, C_in, k, k) = the exact minimiser of (ρ/2) Σ‖x − W ∗ a‖² + (ρμ/2)‖W − W₀‖² (μ = ridge·tr G/n;
    W₀ = 0 or ``anchor``): the dense block (:func:`updates.solve_weights`) on the flattened kernel."""
    flat_anchor = anchor.reshape(anchor.shape[0], -1) if anchor is not None else None
    W, _ = U.solve_weights(G, C, ridge, None, flat_anchor)
    return W.reshape(shape)


# ----------------------------------------------------------------------------------------------------
# The spike block of a layer that feeds a convolution
# ----------------------------------------------------------------------------------------------------

@dataclass
class CGResult:
    """The solution, the iterations run and the final relative residual ‖b − M x‖ / ‖b‖ (per system, max)."""
    x: torch.Tensor
    iterations: int
    relative_residual: float


def solve_spikes_cg(b: torch.Tensor, apply_AtA, beta_over_rho: float, x0: torch.Tensor | None = None,
                    tol: float = 1e-6, max_iterations: int = 200, reduce=None) -> CGResult:
    """x = (c I + AᵀA)^{-1} b with c = β/ρ (+ θ² for t < T, as the caller's spike block says), by
    conjugate gradients on every system of the batch at once (each row of the batch its own system:
    separate step lengths per row). ``apply_AtA(x)`` = Aᵀ(A x). Stops when every row's relative residual
    is at most ``tol`` or after ``max_iterations``; the matrix is symmetric positive definite for c > 0,
    so CG converges (in at most n steps in exact arithmetic).

    ``reduce``: sums a tensor over processes (data-parallel runs, each with its part of the rows): the
    iterations go on while the number of rows above ``tol``, summed over processes, is > 0, so every
    process runs as many iterations as one process on all the rows, and each row gets the same iterates.
    The returned residual is this process's rows' largest."""
    if not beta_over_rho > 0:
        raise SettingsError(f"the spike block's diagonal {beta_over_rho} must be > 0 for CG")
    B = b.shape[0]

    def M(v):
        return beta_over_rho * v + apply_AtA(v)

    def rowdot(p, q):
        return (p * q).reshape(B, -1).sum(1)

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - M(x)
    p = r.clone()
    rr = rowdot(r, r)
    bnorm = rowdot(b, b).sqrt().clamp_min(1e-300)
    shape = (B,) + (1,) * (b.dim() - 1)

    def going(rr) -> bool:  # some row (of any process) is above the tolerance
        ratio = rr.sqrt() / bnorm
        if reduce is None:
            return float(ratio.max()) > tol
        return float(reduce((ratio > tol).sum().to(torch.float64))) > 0

    it = 0
    while it < max_iterations and going(rr):
        Mp = M(p)
        alpha = rr / rowdot(p, Mp).clamp_min(1e-300)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * Mp
        rr_new = rowdot(r, r)
        p = r + (rr_new / rr.clamp_min(1e-300)).view(shape) * p
        rr = rr_new
        it += 1
    final = b - M(x)  # the true residual, not the recursively updated one
    res = float((rowdot(final, final).sqrt() / bnorm).max())
    return CGResult(x, it, res)
