"""The input layer's fixed Gram matrix G = Σ_t Σ_samples a_{0,t} a_{0,t}ᵀ, formed exactly, on any x86 CPU.

Spike frames hold small non-negative integers (binary frames: 0 and 1; event counts: up to k), so every
entry of G is an integer: the number of (t, sample) rows in which two inputs are both active (weighted
by their counts). A float32 product of such rows is exact whatever the order of its additions, as long as
every partial sum stays an integer ≤ 2^24 (each is then representable in float32): with rows · k² ≤ 2^24
summed so far. So the products go into a float32 accumulator, which is added to the float64 result (an
integer < 2^53: exact) before it could pass 2^24. The result equals the float64 product Σ a aᵀ bit for
bit (tests/test_gram.py).

Two float32 kernels, chosen by the frames' density of nonzero entries — a property of the data, the same
on every CPU — never by the instruction set torch was built for or dispatches to:

    sparse  (density ≤ :data:`SPARSE_MAX_DENSITY`): for column pieces J of :data:`SPARSE_COLUMNS`,
            G[:max J, J] = (rows' transpose in CSR form, its rows up to max J) × (the rows' columns J,
            dense): about nnz · n_0 / 2 multiply-adds instead of T·N·n_0² (the dense operand stays in
            cache);
    dense   the upper triangle by row blocks of :data:`DENSE_BLOCKS` (G_{IJ} for J ≥ I):
            (b+1)/(2b) of the full product's multiply-adds.

Both form the upper triangle; the lower one is its mirror.

Frames that are not small non-negative integers: one float64 product per block of rows.

Why not int8 (``torch._int_mm``): exact too, and faster than float32 where oneDNN has VNNI kernels, but
tens of times slower than a float32 product on CPUs without them (AVX2-only). The float32 kernels give
every CPU the same path (and the same bits); the dense one runs at the CPU's float32 product rate, like
the later iterations, and the sparse one hardly depends on the instruction set. Measurements:
docs/performance-and-determinism.md (bench/gram_kernels.py).
"""

from __future__ import annotations

import warnings

import torch

EXACT_FLOAT32 = 1 << 24
"""Largest integer up to which every integer is a float32 (and sums of integers stay exact)."""

MAX_COUNT = 255
"""Largest frame value for the float32 kernels (uint8 range); larger or non-integer values: float64."""

SPARSE_MAX_DENSITY = 0.1
"""Frames with at most this fraction of nonzero entries take the sparse kernel: the threshold of the sparse
input products (sparse_inputs.AUTO_MAX_DENSITY), whose CSR form it then reuses. Measured on an AMD EPYC
with its AVX-512 and its AVX2 kernels alike (bench/gram_kernels.py, 8192 rows, the CSR form given): at
density 0.035 (N-MNIST) 2.5x faster than the dense kernel, at 0.1 1.6x; denser frames have no CSR form,
and building one for the Gram alone would cost about as much as the dense product."""

SPARSE_COLUMNS = 64
"""Columns of the dense operand per sparse product (rows × 64 float32 stay in cache; measured on N-MNIST-density
blocks of 1800 rows: 32 or 64 columns 0.42 s, 128 0.53 s, 256 0.61 s for 17 blocks, one thread)."""

DENSE_BLOCKS = 8
"""Row blocks of the dense kernel's upper triangle."""


def frames_integer_max(frames: torch.Tensor) -> int | None:
    """The largest frame value if every value is an integer in [0, :data:`MAX_COUNT`] (binary spike
    frames: 1), else None; checked a slice of samples at a time."""
    T, N = frames.shape[0], frames.shape[1]
    step = max(1, (1 << 22) // max(1, T * frames.shape[2]))
    top = 0
    for s in range(0, N, step):
        f = frames[:, s:s + step]
        if f.numel() == 0:
            continue
        if f.is_floating_point():
            if not bool(((f == f.round()) & (f >= 0) & (f <= MAX_COUNT)).all()):
                return None
            top = max(top, int(f.max()))
        else:
            lo, hi = int(f.min()), int(f.max())
            if lo < 0 or hi > MAX_COUNT:
                return None
            top = max(top, hi)
    return top


def kernel(int_max: int | None, density: float | None) -> str:
    """The kernel for frames of this largest integer value (None: not small integers) and density:
    "sparse-float32", "dense-float32" or "float64"."""
    if int_max is None:
        return "float64"
    return "sparse-float32" if density is not None and density <= SPARSE_MAX_DENSITY else "dense-float32"


class ExactGram:
    """Accumulates Σ a aᵀ over pieces of rows (see the module docstring) and returns it in float64.

    ``add_dense(rows)`` takes a (rows, n) block of frames (any dtype); ``add_sparse(rows, csr_t)`` also
    takes the block's transpose (n, rows) in CSR form with float32 values. ``total()`` returns G."""

    def __init__(self, n: int, int_max: int | None, kind: str, device, dtype=torch.float64):
        self.n, self.kind, self.dtype, self.device = n, kind, dtype, device
        self.per_row = max(int_max or 0, 1) ** 2  # the most a row adds to any entry
        self.total64 = torch.zeros(n, n, dtype=dtype, device=device)
        self.acc = torch.zeros(n, n, dtype=torch.float32, device=device) if kind != "float64" else None
        self.pending = 0  # the most any float32 entry may hold now

    def _room(self, rows: int) -> None:
        if self.pending + rows * self.per_row > EXACT_FLOAT32:
            self.flush()

    def flush(self) -> None:
        if self.acc is not None and self.pending:
            self.total64 += self.acc
            self.acc.zero_()
        self.pending = 0

    def _pieces(self, rows: int):
        """Row ranges small enough that one piece alone stays exact in float32."""
        step = max(1, EXACT_FLOAT32 // self.per_row)
        for r0 in range(0, rows, step):
            yield r0, min(r0 + step, rows)

    def add_dense(self, a: torch.Tensor) -> None:
        """a: (rows, n) frames."""
        if self.kind == "float64":
            a = a.to(self.dtype)
            self.total64 += a.T @ a
            return
        for r0, r1 in self._pieces(a.shape[0]):
            self._room(r1 - r0)
            x = a[r0:r1].to(torch.float32)
            n, w = self.n, -(-self.n // DENSE_BLOCKS)
            for i in range(0, n, w):
                self.acc[i:i + w, i:].addmm_(x[:, i:i + w].T, x[:, i:])
            self.pending += (r1 - r0) * self.per_row

    def add_sparse(self, a: torch.Tensor, csr_t: torch.Tensor) -> None:
        """a: (rows, n) frames; csr_t: their transpose (n, rows) as a float32 CSR tensor."""
        if self.kind != "sparse-float32" or a.shape[0] * self.per_row > EXACT_FLOAT32:
            self.add_dense(a)  # (a piece too long for one exact float32 product: never for binary frames)
            return
        self._room(a.shape[0])
        crow, col, val = csr_t.crow_indices(), csr_t.col_indices(), csr_t.values()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            for j in range(0, self.n, SPARSE_COLUMNS):
                k = min(j + SPARSE_COLUMNS, self.n)  # rows 0..k of Aᵀ: the upper triangle of columns j..k
                e = int(crow[k])
                upper = torch.sparse_csr_tensor(crow[:k + 1], col[:e], val[:e], (k, a.shape[0]),
                                                check_invariants=False)
                self.acc[:k, j:k] += upper @ a[:, j:k].to(torch.float32)
        self.pending += a.shape[0] * self.per_row

    def total(self) -> torch.Tensor:
        """G in float64 (the dense kernel's lower triangle mirrored from the upper)."""
        self.flush()
        G = self.total64
        if self.kind != "float64":
            lower = torch.ones(self.n, self.n, dtype=torch.bool, device=G.device).tril_(-1)
            G = torch.where(lower, G.T, G)
        self.acc = None
        return G


def gram(frames_rows: torch.Tensor, dtype=torch.float64, density: float | None = None) -> torch.Tensor:
    """Σ a aᵀ of a (rows, n) or (T, N, n) block of frames, exactly (one call: the kernel for the frames'
    own integer range and ``density``; the sparse kernel builds the transposed CSR form itself)."""
    n = frames_rows.shape[-1]
    a = frames_rows.reshape(-1, n)
    top = frames_integer_max(a.unsqueeze(0))
    acc = ExactGram(n, top, kernel(top, density), a.device, dtype)
    if acc.kind == "sparse-float32":
        from .sparse_inputs import transposed_csr
        acc.add_sparse(a, transposed_csr(a, torch.float32))
    else:
        acc.add_dense(a)
    return acc.total()
