"""The convolutional layer's blocks (admm/conv.py): the architecture string, the operator and its adjoint,
the conv weight block against least squares, and the CG spike solve against the dense solve."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import conv as CV
from admm_snn.errors import SettingsError

DT = torch.float64
CONFIGS = [  # (C_in, H, C_out, k, stride, padding, pool, mode)
    (2, 7, 3, 3, 1, 0, 1, "sum"),
    (2, 9, 3, 3, 2, 1, 1, "sum"),
    (1, 8, 2, 3, 1, 1, 2, "sum"),
    (2, 9, 2, 2, 2, 0, 2, "average"),  # odd size: the pooling drops the last row and column
]


def test_architecture_strings():
    assert CV.parse_arch("12c5-p2-32c5-p2-128") == [CV.ConvSpec(12, 5), CV.PoolSpec(2), CV.ConvSpec(32, 5),
                                                    CV.PoolSpec(2), CV.DenseSpec(128)]
    assert CV.parse_arch("8c3s2p1-a2-64") == [CV.ConvSpec(8, 3, 2, 1), CV.PoolSpec(2, "average"), CV.DenseSpec(64)]
    assert CV.parse_arch("128-64") == [CV.DenseSpec(128), CV.DenseSpec(64)]


@pytest.mark.parametrize("bad", ["", "12x5", "12c5-p2", "128-12c5", "0c3", "12c5--64", "p0-64"])
def test_bad_architecture_strings_are_one_line_errors(bad):
    with pytest.raises(SettingsError) as e:
        CV.parse_arch(bad)
    assert "\n" not in str(e.value) and "architecture" in str(e.value)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_adjoint_is_the_transpose(cfg):
    """⟨A a, g⟩ = ⟨a, Aᵀ g⟩ for random a, g: conv_adjoint is the exact adjoint of conv_forward."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, C_in, H, H, generator=g, dtype=DT)
    W = torch.randn(C_out, C_in, k, k, generator=g, dtype=DT)
    u = CV.conv_forward(a, W, s, p, q, mode)
    h = torch.randn(u.shape, generator=g, dtype=DT)
    back = CV.conv_adjoint(h, W, tuple(a.shape), s, p, q, mode)
    assert back.shape == a.shape
    assert float((u * h).sum()) == pytest.approx(float((a * back).sum()), rel=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_patches_give_the_convolution(cfg):
    C_in, H, C_out, k, s, p, q, mode = cfg
    g = torch.Generator().manual_seed(2)
    a = (torch.rand(3, C_in, H, H, generator=g) < 0.4).to(DT)
    W = torch.randn(C_out, C_in, k, k, generator=g, dtype=DT)
    u = CV.conv_forward(a, W, s, p, q, mode)
    P = CV.patches(a, k, s, p, q, mode)
    assert torch.allclose(P @ W.reshape(C_out, -1).T, u.permute(0, 2, 3, 1).reshape(-1, C_out), atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cross_sums_without_patches(cfg):
    """C = Σ X P from the convolution's kernel gradient (no patch matrix): equal to the patches' product in
    float64, the same with and without the Gram (so a run gives the same C whether the first layer's
    Gram is kept or formed, as after a resume), and within float32 rounding of it from float32 targets."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g = torch.Generator().manual_seed(4)
    a = (torch.rand(5, C_in, H, H, generator=g) < 0.4).to(DT)
    x = CV.conv_forward(a, torch.randn(C_out, C_in, k, k, generator=g, dtype=DT), s, p, q, mode)
    x = x + torch.randn(x.shape, generator=g, dtype=DT)
    P = CV.patches(a, k, s, p, q, mode)
    C = x.permute(0, 2, 3, 1).reshape(-1, C_out).T @ P
    G64, C64 = CV.patch_sums(a, x, k, s, p, q, mode)
    none, C64b = CV.patch_sums(a, x, k, s, p, q, mode, gram=False)
    assert none is None and torch.equal(C64, C64b) and torch.allclose(C64, C, atol=1e-12, rtol=1e-12)
    assert torch.allclose(G64, P.T @ P, atol=1e-12)
    _, C32 = CV.patch_sums(a.float(), x.float(), k, s, p, q, mode, gram=False)
    assert C32.dtype == torch.float64
    torch.testing.assert_close(C32, C, rtol=1e-5, atol=1e-5 * float(C.abs().max()))


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("proximal", [False, True])
def test_conv_weight_block_is_the_least_squares_minimiser(cfg, proximal):
    """solve_conv_weights minimises Σ‖x − W ∗ pool(a)‖² + μ‖W − W₀‖² (μ = ridge·tr G/n) over the kernel:
    the same W as lstsq on the stacked system [P; √μ I] Wᵀ = [X; √μ W₀ᵀ], and sums over two chunks of
    rows equal the sums over all of them."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(6, C_in, H, H, generator=g) < 0.4).to(DT)
    shape = (C_out, C_in, k, k)
    x = CV.conv_forward(a, torch.randn(shape, generator=g, dtype=DT), s, p, q, mode)
    x = x + 0.1 * torch.randn(x.shape, generator=g, dtype=DT)
    anchor = torch.randn(shape, generator=g, dtype=DT) if proximal else None
    G, C = CV.patch_sums(a, x, k, s, p, q, mode)
    G1, C1 = CV.patch_sums(a[:2], x[:2], k, s, p, q, mode)
    G2, C2 = CV.patch_sums(a[2:], x[2:], k, s, p, q, mode)
    assert torch.allclose(G1 + G2, G, atol=1e-12) and torch.allclose(C1 + C2, C, atol=1e-12)
    ridge = 0.3
    W = CV.solve_conv_weights(G, C, shape, ridge, anchor)
    n = G.shape[0]
    mu = ridge * float(torch.diagonal(G).sum()) / n + 1e-10 * max(float(torch.diagonal(G).sum()) / n, 1.0)
    P = CV.patches(a, k, s, p, q, mode)
    X = x.permute(0, 2, 3, 1).reshape(-1, C_out)
    W0 = anchor.reshape(C_out, -1) if proximal else torch.zeros(C_out, n, dtype=DT)
    A = torch.cat([P, mu ** 0.5 * torch.eye(n, dtype=DT)])
    rhs = torch.cat([X, mu ** 0.5 * W0.T])
    ref = torch.linalg.lstsq(A, rhs).solution.T
    assert torch.allclose(W.reshape(C_out, -1), ref, atol=1e-9, rtol=1e-9)


def _operator(cfg):
    """(generator, random kernel W, n = C_in·H·H, the explicit matrix A (outputs, n) of a ↦ W ∗ pool(a))."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g = torch.Generator().manual_seed(4)
    W = torch.randn(C_out, C_in, k, k, generator=g, dtype=DT)
    n = C_in * H * H
    basis = torch.eye(n, dtype=DT).reshape(n, C_in, H, H)
    return g, W, n, CV.conv_forward(basis, W, s, p, q, mode).reshape(n, -1).T


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cg_spike_solve_matches_the_dense_solve(cfg):
    """(cI + AᵀA) x = b by matrix-free CG equals the dense solve with the operator's matrix (built from
    its columns) to the tolerance it reports."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g, W, n, A = _operator(cfg)
    c = 0.7
    b = torch.randn((3, C_in, H, H), generator=g, dtype=DT)
    res = CV.solve_spikes_cg(b, lambda v: CV.conv_adjoint(CV.conv_forward(v, W, s, p, q, mode), W, tuple(v.shape),
                                                          s, p, q, mode), c, tol=1e-10, max_iterations=500)
    dense = torch.linalg.solve(c * torch.eye(n, dtype=DT) + A.T @ A, b.reshape(3, n).T).T
    assert res.relative_residual <= 1e-10
    assert torch.allclose(res.x.reshape(3, n), dense, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("cfg", CONFIGS + [(3, 11, 4, 3, 1, 1, 3, "sum"), (2, 12, 3, 5, 1, 2, 1, "sum")])
def test_direct_spike_solve_matches_the_dense_solve(cfg):
    """CᵀC from the probe images is the operator's matrix product, and the direct solve through the pooled
    space (Woodbury with P Pᵀ = κI) equals the dense solve of (cI + AᵀA) x = b, for both diagonals, a small
    one (ill-conditioned) included: stride, padding, sum and average pooling, an odd size that the pooling
    crops, a kernel wider than half the image (the probes' windows then cover it whole)."""
    C_in, H, C_out, k, s, p, q, mode = cfg
    g, W, n, A = _operator(cfg)
    Hp = H // q
    m = C_in * Hp * Hp
    C = CV.conv_forward(torch.eye(m, dtype=DT).reshape(m, C_in, Hp, Hp), W, s, p).reshape(m, -1).T
    M = CV.conv_normal_matrix(W, (C_in, Hp, Hp), s, p)
    assert torch.allclose(M, C.T @ C, atol=1e-12, rtol=1e-12)
    f = CV.pooled_factors(W, (C_in, Hp, Hp), s, p, q, mode, (0.7, 1e-3))
    b = torch.randn((3, C_in, H, H), generator=g, dtype=DT)
    for which, c in enumerate((0.7, 1e-3)):
        x = CV.pooled_solve(f, b, which)
        assert x.shape == b.shape and x.dtype == b.dtype
        dense = torch.linalg.solve(c * torch.eye(n, dtype=DT) + A.T @ A, b.reshape(3, n).T).T
        assert torch.allclose(x.reshape(3, n), dense, atol=1e-9 * float(dense.abs().max()), rtol=1e-9)
    with pytest.raises(SettingsError):
        CV.pooled_factors(W, (C_in, Hp, Hp), s, p, q, mode, (0.7, 0.0))


def test_spike_solve_method_weighs_flops_and_memory():
    """auto: direct where 2n² ≤ 10 CG iterations' flops and n ≤ 4096 (n the pooled image's numbers); a given
    method is kept; anything else is a one-line error."""
    assert CV.spike_solve_method((12, 15, 15), (32, 11, 11), 5) == "direct"  # 12c5-p2-32c5 on N-MNIST
    assert CV.spike_solve_method((4, 32, 32), (4, 32, 32), 3) == "cg"  # 4c3-4c3p1: 2·4096² > 10·4·4·4096·4·9
    assert CV.spike_solve_method((64, 16, 16), (64, 16, 16), 5) == "cg"  # cheap per flop, but 16,384 numbers
    assert CV.spike_solve_method((4, 32, 32), (4, 32, 32), 3, "direct") == "direct"
    assert CV.spike_solve_method((12, 15, 15), (32, 11, 11), 5, "cg") == "cg"
    with pytest.raises(SettingsError) as e:
        CV.spike_solve_method((1, 2, 2), (1, 2, 2), 1, "lu")
    assert "\n" not in str(e.value) and "'lu'" in str(e.value)


def test_cg_stops_at_its_iteration_cap_and_reports_the_residual():
    W = torch.randn(2, 1, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(5))
    b = torch.randn(2, 1, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(6))
    op = lambda v: CV.conv_adjoint(CV.conv_forward(v, W), W, tuple(v.shape))  # noqa: E731
    res = CV.solve_spikes_cg(b, op, 1e-3, tol=1e-14, max_iterations=2)
    assert res.iterations == 2 and res.relative_residual > 1e-14
    with pytest.raises(SettingsError):
        CV.solve_spikes_cg(b, op, 0.0)
