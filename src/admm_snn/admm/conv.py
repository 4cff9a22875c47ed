"""The blocks of a convolutional LIF layer: the maths only (admm/conv_solver.py wires them into the solver).

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
- **Spikes of the layer below**: the spike block's normal equations (c I + AᵀA) a = b couple every
  position of a sample. Two exact ways, chosen per layer by :func:`spike_solve_method`:
  * **direct** (:func:`pooled_factors`, :func:`pooled_solve`): with A = C P (C the convolution on the
    pooled image, P the pooling, P Pᵀ = κ I because its windows do not overlap: κ = p² for sum pooling,
    1/p² for average, 1 without), Woodbury's identity through the pooled space gives
        a = (b − Pᵀ P b / κ) / c + Pᵀ (c I + κ CᵀC)^{-1} P b / κ,
    one Cholesky factor of the (C_in·H_p·W_p)² matrix c I + κ CᵀC per system (CᵀC built by applying
    the convolution and its adjoint to the unit images) and two triangular solves per right-hand side;
  * **cg** (:func:`solve_spikes_cg`): matrix-free conjugate gradients, with A (conv of the pooled
    spikes) and Aᵀ (the adjoint: ``conv_transpose2d`` then the pooling's adjoint) as the only
    operations, to the relative residual ``tol`` it is given, for pooled images too large to factor.
  Not an FFT diagonalisation: the stride, the zero padding and the pooling make AᵀA block-Toeplitz at
  best, not circulant, so an FFT would solve a different (periodic) problem. tests/test_conv.py checks
  both against the dense solve.
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
    if tuple(up.shape) == tuple(shape):  # the windows tile the input: no uncovered rows or columns
        return up
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

DIRECT_MAX_UNITS = 4096
"""The largest pooled image (C_in·H_p·W_p numbers) whose spike systems :func:`spike_solve_method` factors
("auto"): two float64 factors of 4096² take 256 MiB."""

CG_ITERATIONS_ASSUMED = 10
"""The CG iterations per system that :func:`spike_solve_method` assumes when it weighs CG against the
direct solve (the N-MNIST runs take 8-15 to the default tolerance 1e-4)."""


SPIKE_SOLVES = ("auto", "direct", "cg")


def check_spike_solve(method: str) -> None:
    """A one-line SettingsError unless ``method`` is one of :data:`SPIKE_SOLVES`."""
    if method not in SPIKE_SOLVES:
        raise SettingsError(f"conv spike solve {method!r} must be auto, direct or cg")


def spike_solve_method(pooled_shape: tuple, out_shape: tuple, kernel: int, method: str = "auto") -> str:
    """"direct" or "cg" for the spike systems of a layer below a convolution whose pooled input has
    ``pooled_shape`` (C_in, H_p, W_p) and output ``out_shape`` (C_out, H', W'). A given method is kept;
    "auto" takes the direct solve when the pooled image has at most :data:`DIRECT_MAX_UNITS` numbers and
    its two triangular solves per right-hand side (2 n² flops, n = C_in·H_p·W_p) cost at most what
    :data:`CG_ITERATIONS_ASSUMED` CG iterations do (each a convolution and its adjoint: 4·C_out·H'·W'·C_in·k²
    flops). A rule in flops, so that every machine picks the same solver (and the same iterates)."""
    check_spike_solve(method)
    if method != "auto":
        return method
    n = pooled_shape[0] * pooled_shape[1] * pooled_shape[2]
    conv = 4 * out_shape[0] * out_shape[1] * out_shape[2] * pooled_shape[0] * kernel * kernel
    return "direct" if n <= DIRECT_MAX_UNITS and 2 * n * n <= CG_ITERATIONS_ASSUMED * conv else "cg"


def probe_images(pooled_shape: tuple, kernel: int) -> int:
    """How many probe images :func:`conv_normal_matrix` sends through the convolution and its adjoint for
    images of ``pooled_shape`` (C_in, H, W): C_in·min(2k − 1, H)·min(2k − 1, W)."""
    d = 2 * kernel - 1
    return pooled_shape[0] * min(d, pooled_shape[1]) * min(d, pooled_shape[2])


def conv_normal_matrix(W: torch.Tensor, pooled_shape: tuple, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """CᵀC (n × n, float64, n = C_in·H·W for images of ``pooled_shape`` (C_in, H, W)) for the convolution
    C: a ↦ W ∗ a (no pooling). Column (i, y, x) is Cᵀ C e_{i,y,x}, and it is zero outside the pixels
    within k − 1 of (y, x) (C e reaches the outputs whose window covers (y, x), Cᵀ spreads them back over
    their windows), whatever the stride and padding. So unit images d = 2k − 1 apart do not overlap:
    one probe image per channel and offset (i, y mod d, x mod d) holds all of them, and each column is
    its probe's response masked to its own (2k − 1)² window: :func:`probe_images` images through the
    convolution and its adjoint instead of n (12·15·15 with k = 5: 972 instead of 2,700)."""
    C_in, H, Wd = pooled_shape
    k = W.shape[-1]
    d = 2 * k - 1
    dy, dx = min(d, H), min(d, Wd)
    dev = W.device
    W64 = W.to(torch.float64)
    ys, xs = torch.arange(H, device=dev), torch.arange(Wd, device=dev)
    probes = torch.zeros(C_in, dy, dx, C_in, H, Wd, dtype=torch.float64, device=dev)
    my = (ys[None, :] % d == torch.arange(dy, device=dev)[:, None]).to(torch.float64)  # (offset, y)
    mx = (xs[None, :] % d == torch.arange(dx, device=dev)[:, None]).to(torch.float64)
    impulses = my[:, None, :, None] * mx[None, :, None, :]  # (dy, dx, H, W): the pixels of each offset
    for i in range(C_in):
        probes[i, :, :, i] = impulses
    images = probes.reshape(-1, C_in, H, Wd)
    response = conv_adjoint(conv_forward(images, W64, stride, padding), W64, tuple(images.shape), stride, padding)
    response = response.reshape(C_in, dy, dx, C_in, H, Wd)
    # column (i, y, x) = response[i, y mod d, x mod d] on the window |y' − y| < k, |x' − x| < k
    cols = response[:, (ys % d)][:, :, (xs % d)]  # (C_in, H, W, C_in, H, W)
    near_y = ((ys[:, None] - ys[None, :]).abs() < k).to(torch.float64)  # (y, y')
    near_x = ((xs[:, None] - xs[None, :]).abs() < k).to(torch.float64)
    cols = cols * near_y[None, :, None, None, :, None] * near_x[None, None, :, None, None, :]
    n = C_in * H * Wd
    out = cols.reshape(n, n)  # row (i, y, x) = column (i, y, x) of CᵀC
    return (out + out.T) / 2  # symmetric to rounding; exactly symmetric for the factorisation


@dataclass
class PooledFactors:
    """The factors of :func:`pooled_solve`: Cholesky factors of c I + κ CᵀC, one per diagonal c."""
    diagonals: tuple
    factors: tuple
    kappa: float
    pool_size: int
    pool_mode: str


def pooled_factors(W: torch.Tensor, pooled_shape: tuple, stride: int, padding: int, pool_size: int,
                   pool_mode: str, diagonals: tuple) -> PooledFactors:
    """Cholesky factors of c I + κ CᵀC (float64) for each c of ``diagonals`` (all > 0), κ = P Pᵀ's scale:
    p² for sum pooling over p×p windows, 1/p² for average pooling, 1 without pooling (``pool_size`` 1)."""
    if not all(c > 0 for c in diagonals):
        raise SettingsError(f"the spike block's diagonals {diagonals} must be > 0")
    q = pool_size
    kappa = 1.0 if q == 1 else (float(q * q) if pool_mode == "sum" else 1.0 / (q * q))
    M = conv_normal_matrix(W, pooled_shape, stride, padding)
    factors = tuple(U.cholesky(U.plus_diagonal(kappa * M, c), "spike-update matrix") for c in diagonals)
    return PooledFactors(tuple(diagonals), factors, kappa, q, pool_mode)


def pooled_solve(f: PooledFactors, b: torch.Tensor, which: int) -> torch.Tensor:
    """x = (c I + Pᵀ CᵀC P)^{-1} b for the rows b (B, C_in, H, W), c = ``f.diagonals[which]``, exact:
    x = (b − Pᵀ P b / κ) / c + Pᵀ y / κ with (c I + κ CᵀC) y = P b (P Pᵀ = κ I); the n×n solve in float64,
    the pooling and its adjoint in b's dtype. Without pooling x = y."""
    c = f.diagonals[which]
    shape = tuple(b.shape)
    Pb = pool(b, f.pool_size, f.pool_mode)
    pooled = Pb.shape
    y = torch.cholesky_solve(Pb.reshape(shape[0], -1).T.to(torch.float64), f.factors[which]).T
    y = y.to(b.dtype).reshape(pooled)
    if f.pool_size == 1:
        return y
    back = pool_adjoint(y - Pb * (1.0 / c), f.pool_size, shape, f.pool_mode)
    return b / c + back / f.kappa


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
