"""Products with the input frames from their CSR form (admm_snn.admm.sparse_inputs): the same numbers
as the dense products up to the order of the additions, the same solver results, and "auto" choosing
the sparse form only for sparse frames."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm import sparse_inputs as SI
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.errors import SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _frames(T=6, N=20, n=40, density=0.05, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, N, n, generator=g) < density).to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("piece_rows", [U.CROSS_PIECE_ROWS, 7, 1])
def test_block_products_equal_the_dense_products(piece_rows, device):
    A = _frames(T=5, N=9, n=30, density=0.2).to(device)
    A[:, 3] = 0  # a sample with no events: empty rows
    blk = SI.SparseBlock(A, piece_rows, dtype=torch.float64)
    assert blk.nnz == int(A.count_nonzero())
    g = torch.Generator().manual_seed(1)
    W = torch.randn(11, 30, generator=g, dtype=torch.float64).to(device)
    u = blk.product(W.T.contiguous())
    assert u.shape == (5, 9, 11) and u.dtype == torch.float64
    assert torch.allclose(u, A.double() @ W.T, atol=1e-12)
    x = torch.randn(5, 9, 11, generator=g, dtype=torch.float64).to(device)
    ref = x.reshape(-1, 11).T @ A.double().reshape(-1, 30)
    C = blk.cross_sum(x, torch.float64, torch.float64)
    assert C.shape == (11, 30) and torch.allclose(C, ref, atol=1e-12)
    C32 = blk.cross_sum(x.float(), torch.float32, torch.float64)  # float32 products, float64 sums
    assert C32.dtype == torch.float64 and torch.allclose(C32, ref, atol=1e-5)
    u32 = blk.product(W.T.float().contiguous())
    assert u32.dtype == torch.float32 and torch.allclose(u32.double(), A.double() @ W.T, atol=1e-5)


def test_nonbinary_frames_keep_their_values():
    A = _frames(density=0.3) * torch.randint(1, 5, (6, 20, 40), generator=torch.Generator().manual_seed(3),
                                             dtype=torch.uint8)
    W = torch.randn(7, 40, dtype=torch.float64)
    assert torch.allclose(SI.SparseBlock(A, dtype=torch.float64).product(W.T.contiguous()), A.double() @ W.T,
                          atol=1e-12)


def test_auto_takes_the_sparse_form_only_for_sparse_frames():
    s = ADMMSettings()
    assert s.input_format == "auto"
    assert SI.enabled(s, _frames(density=0.05), S.SolverCache())
    assert not SI.enabled(s, _frames(density=0.5), S.SolverCache())
    assert not SI.enabled(s.replace(input_format="dense"), _frames(density=0.05), S.SolverCache())
    assert SI.enabled(s.replace(input_format="sparse"), _frames(density=0.5), S.SolverCache())
    assert not SI.enabled(s.replace(input_format="sparse"), _frames(), None)  # no cache: dense
    with pytest.raises(SettingsError, match="input_format"):
        ADMMSettings(input_format="csr")


def _run(frames, y, sizes, s, iterations=3):
    g = torch.Generator().manual_seed(s.seed)
    cache = S.SolverCache()
    state = S.init_state(frames, y, sizes, s, g, cache)
    for _ in range(iterations):
        S.iterate(state, frames, y, s, cache, g)
    return state, cache


@pytest.mark.parametrize("preset", ["default", "chunked", "paper", "paper-parallel"])
def test_solver_with_sparse_inputs_gives_the_dense_result(preset):
    """float64 state and products: the sparse and dense runs agree to rounding (no threshold flips)."""
    frames = _frames(T=6, N=24, n=48, density=0.08, seed=5)
    y = torch.nn.functional.one_hot(torch.arange(24) % 4, 4).double()
    sizes = [48, 12, 8, 4]
    base = {"default": ADMMSettings(dtype="float64", cross_dtype="float64"),
            "chunked": ADMMSettings(dtype="float64", cross_dtype="float64", chunk_size=7),
            "paper": ADMMSettings.paper(dtype="float64"),
            "paper-parallel": ADMMSettings.paper(dtype="float64", schedule="parallel")}[preset]
    dense, _ = _run(frames, y, sizes, base.replace(input_format="dense"))
    sparse, cache = _run(frames, y, sizes, base.replace(input_format="sparse"))
    assert any(k[0] == "sparse-block" for k in cache.extra if isinstance(k, tuple))  # the sparse path ran
    for a, b in zip(dense.weights + dense.potentials + dense.spikes, sparse.weights + sparse.potentials + sparse.spikes):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_memory_estimate_counts_the_sparse_form():
    from admm_snn.resources import SPARSE_HEAP_FACTOR, estimate_memory
    T, N, n = 10, 200, 300
    frames = _frames(T=T, N=N, n=n, density=0.04, seed=2)
    d = SI.frame_density(frames)
    s = ADMMSettings()
    blk = SI.SparseBlock(frames)
    blk.product(torch.randn(n, 5))                              # float32 values (the currents)
    blk.cross_sum(torch.randn(T, N, 5), torch.float32, torch.float64)  # float32 values of the transpose
    sizes = [n, 16, 10]
    est = estimate_memory(sizes, T, N, s, "uint8", "cpu", d)["sparse"] / SPARSE_HEAP_FACTOR
    assert 0.9 * blk.nbytes() <= est <= 1.3 * blk.nbytes()
    assert estimate_memory(sizes, T, N, s, "uint8", "cpu", 0.5)["sparse"] == 0     # auto: dense frames
    assert estimate_memory(sizes, T, N, s, "uint8", "cuda", d)["sparse"] > 0       # auto: sparse on CUDA too
    assert estimate_memory(sizes, T, N, s.replace(input_format="dense"), "uint8", "cpu", d)["sparse"] == 0
