"""Products with the input frames in compressed sparse row (CSR) form.

Event-camera frames are sparse: 3.5% of the 30 × 2312 N-MNIST frame entries of a recording are nonzero.
The two products with the frames that every iteration forms,

    u = A W_1ᵀ    the input currents W_1 a_{0,t} of every (t, sample) row of A (the frames, T·N × n_0),
    C = xᵀ A      the cross sum Σ_t x_{1,t} a_{0,t}ᵀ of the first layer's weight update,

cost 2·nnz(A)·n_1 multiply-adds with A stored as CSR (and Aᵀ as CSR for C) instead of 2·T·N·n_0·n_1
dense. The structure is built once per block of samples and kept for the run (the frames never change);
each product equals the dense product up to the order of its additions (tests/test_sparse_inputs.py).
Rows are split into pieces of at most ``updates.CROSS_PIECE_ROWS``, and the pieces' cross sums are
added in the gram dtype, as in :func:`admm_snn.admm.updates.weight_statistics`.

``input_format`` (a setting): "dense" — never; "sparse" — always; "auto" (default) — when the frames'
density is at most :data:`AUTO_MAX_DENSITY` (measured once per run), on CPU and CUDA alike.
"""

from __future__ import annotations

import warnings

import torch

from ..heap import release_free_heap
from . import updates as U

AUTO_MAX_DENSITY = 0.1
"""Largest density of nonzero frame entries for which "auto" takes the sparse products. Measured on the
2-core development machine (1 thread, blocks of 60 N-MNIST samples, density 0.035): the CSR products
took 0.26 s against 0.69 s dense for the currents and 0.18 s against 0.70 s for the cross sums
(width 512), and 0.035 s against 0.27 s for the currents at width 128 (conversion included). On an
H200 (cuSPARSE, 2312-512-10, T=30) whole iterations took 0.027 / 0.088 / 0.316 s against 0.035 /
0.120 / 0.437 s dense for N = 4000 / 16000 / 60000."""


class SparseBlock:
    """A block of frames (T, B, n) as CSR pieces of its (t, sample) rows and of their transpose, with
    values in ``dtype`` (the currents' products) and ``cross_dtype`` (the transpose, for the cross sums).
    Both typed forms are made here, while the block is built: made later, between the products'
    temporaries, they fragmented the heap (300 MB of resident memory for 40 MB of values, N=2000)."""

    def __init__(self, frames_block: torch.Tensor, piece_rows: int = U.CROSS_PIECE_ROWS,
                 dtype=torch.float32, cross_dtype=None):
        T, B, n = frames_block.shape
        flat = frames_block.reshape(T * B, n)
        self.shape = (T, B, n)
        self.pieces = []  # (r0, r1, crow, col, values, crow_t, col_t, values_t)
        for r0 in range(0, T * B, piece_rows):
            r1 = min(r0 + piece_rows, T * B)
            self.pieces.append((r0, r1, *_csr_pair(flat[r0:r1])))
        self._typed: dict = {}
        for i in range(len(self.pieces)):
            self._csr(i, dtype, False)
            self._csr(i, cross_dtype or dtype, True)

    @property
    def nnz(self) -> int:
        return sum(int(p[4].numel()) for p in self.pieces)

    def nbytes(self) -> int:
        """Bytes held: indices and stored values of both orientations, and the typed values made so far."""
        held = sum(t.numel() * t.element_size() for p in self.pieces for t in p[2:])
        return held + sum(m.values().numel() * m.values().element_size() for m in self._typed.values())

    def _csr(self, i: int, dtype, transposed: bool) -> torch.Tensor:
        key = (i, dtype, transposed)
        m = self._typed.get(key)
        if m is None:
            r0, r1, crow, col, val, crow_t, col_t, val_t = self.pieces[i]
            n = self.shape[2]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
                if transposed:  # built by torch from a dense tensor: the invariants hold
                    m = torch.sparse_csr_tensor(crow_t, col_t, val_t.to(dtype), (n, r1 - r0), check_invariants=False)
                else:
                    m = torch.sparse_csr_tensor(crow, col, val.to(dtype), (r1 - r0, n), check_invariants=False)
            self._typed[key] = m
        return m

    def transposed_pieces(self, dtype):
        """[(r0, r1, Aᵀ of rows r0..r1 as CSR with values in ``dtype``)]: the typed form kept by the block
        if it has one, else made for the caller and not kept (the input Gram needs it once)."""
        out = []
        for i, p in enumerate(self.pieces):
            m = self._typed.get((i, dtype, True))
            if m is None:
                m = _csr_tensor(p[5], p[6], p[7].to(dtype), (self.shape[2], p[1] - p[0]))
            out.append((p[0], p[1], m))
        return out

    def product(self, weights_t: torch.Tensor) -> torch.Tensor:
        """u = A Wᵀ as (T, B, m), with ``weights_t`` = Wᵀ (n, m) contiguous, in its dtype."""
        T, B, _ = self.shape
        out = torch.empty(T * B, weights_t.shape[1], dtype=weights_t.dtype, device=weights_t.device)
        for i, p in enumerate(self.pieces):
            out[p[0]:p[1]] = self._csr(i, weights_t.dtype, False) @ weights_t
        return out.view(T, B, -1)

    def cross_sum(self, x: torch.Tensor, cross_dtype, dtype) -> torch.Tensor:
        """C = Σ_t x_tᵀ a_t (m, n): each piece's product in ``cross_dtype``, the pieces added in ``dtype``."""
        m = x.shape[-1]
        flat = x.reshape(-1, m).to(cross_dtype)
        C = torch.zeros(m, self.shape[2], dtype=dtype, device=x.device)
        for i, p in enumerate(self.pieces):
            C.add_((self._csr(i, cross_dtype, True) @ flat[p[0]:p[1]]).T)
        return C


def _csr_tensor(crow, col, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def transposed_csr(rows: torch.Tensor, dtype) -> torch.Tensor:
    """Aᵀ of a dense (rows, n) block as a CSR tensor (n, rows) with values in ``dtype``."""
    _, _, _, crow_t, col_t, val_t = _csr_pair(rows)
    return _csr_tensor(crow_t, col_t, val_t.to(dtype), (rows.shape[1], rows.shape[0]))


def _csr_pair(dense: torch.Tensor):
    """CSR index arrays (int32) and values of a dense (rows, n) matrix and of its transpose, from one
    ``nonzero`` (torch's own ``to_sparse_csr`` leaves a few times its result in fragmented heap behind)."""
    R, n = dense.shape
    nz = dense.nonzero()
    rows, cols = nz[:, 0], nz[:, 1]
    values = dense[rows, cols]
    crow = torch.zeros(R + 1, dtype=torch.int32, device=dense.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=R), 0)
    order = torch.argsort(cols, stable=True)  # the transpose: grouped by column, rows ascending within
    crow_t = torch.zeros(n + 1, dtype=torch.int32, device=dense.device)
    crow_t[1:] = torch.cumsum(torch.bincount(cols, minlength=n), 0)
    return crow, cols.to(torch.int32), values, crow_t, rows[order].to(torch.int32), values[order]


def frame_density(frames: torch.Tensor) -> float:
    """Fraction of nonzero entries of the frames (T, N, n), counted a slice of samples at a time."""
    T, N = frames.shape[0], frames.shape[1]
    step = max(1, (1 << 22) // max(1, T * frames.shape[2]))
    return sum(int(torch.count_nonzero(frames[:, s:s + step])) for s in range(0, N, step)) / max(1, frames.numel())


_DENSITY = "input-density"


def density(frames: torch.Tensor, cache) -> float:
    """:func:`frame_density`, counted once per run and kept in ``cache`` (or given by
    :func:`remember_density`)."""
    d = cache.extra.get(_DENSITY)
    if d is None:
        d = cache.extra[_DENSITY] = frame_density(frames)
    return d


def remember_density(cache, value: float) -> None:
    """Give ``cache`` the frames' density when the caller has counted it already (for the memory check)."""
    cache.extra[_DENSITY] = value


def uses_sparse(settings, density_of_frames: float | None) -> bool:
    """The rule of ``input_format`` (see the module docstring) for frames of this density (None:
    unknown, so "auto" stays dense)."""
    fmt = getattr(settings, "input_format", "dense")
    if fmt != "auto":
        return fmt == "sparse"
    return density_of_frames is not None and density_of_frames <= AUTO_MAX_DENSITY


def enabled(settings, frames: torch.Tensor, cache) -> bool:
    """Whether the solver's products with ``frames`` use their CSR form (never without a cache)."""
    if cache is None or getattr(settings, "input_format", "dense") == "dense":
        return False
    auto = settings.input_format == "auto"
    return uses_sparse(settings, density(frames, cache) if auto else None)


def block(cache, frames: torch.Tensor, sl: slice, settings) -> SparseBlock:
    """The CSR form of ``frames[:, sl]`` (values in the state dtype and in the cross sums' product dtype
    of ``settings``), built on first use and kept in ``cache`` for the run."""
    key = ("sparse-block", sl.start, sl.stop)
    rec = cache.extra.get(key)
    if rec is None or rec[0] is not frames:
        rec = (frames, SparseBlock(frames[:, sl], dtype=getattr(torch, settings.dtype),
                                   cross_dtype=getattr(torch, settings.cross_product_dtype)))
        if frames.device.type == "cpu":  # the build's freed temporaries (measured +90 MB at N=2000)
            release_free_heap()
        cache.extra[key] = rec
    return rec[1]


def transposed_weights(cache, W: torch.Tensor) -> torch.Tensor:
    """Wᵀ contiguous, kept in ``cache`` while W is the same tensor, unmodified."""
    rec = cache.extra.get("sparse-weights-t")
    if rec is None or rec[0] is not W or rec[1] != W._version:
        rec = (W, W._version, W.T.contiguous())
        cache.extra["sparse-weights-t"] = rec
    return rec[2]
