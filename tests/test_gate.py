"""Gated weight targets (ADMMSettings.target_gate): the formula, and the weight block given them is the
exact proximal least-squares minimiser."""

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.errors import SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gated_targets_formula():
    g = torch.Generator().manual_seed(0)
    T, N, n = 5, 4, 3
    u, z = torch.randn(T, N, n, generator=g, dtype=torch.float64), torch.randn(T, N, n, generator=g, dtype=torch.float64)
    a_fwd = (torch.rand(T, N, n, generator=g) < 0.3).double()
    a = a_fwd + 0.1 * torch.randn(T, N, n, generator=g, dtype=torch.float64)
    x = U.gated_targets(u, a_fwd, a, z, 1.3, 4.0)
    for t in range(T):
        expect = u[t] if t == 0 else u[t] + 1.3 * (a[t - 1] - a_fwd[t - 1]) / (1 + 4.0 * (z[t - 1] - 1.3).abs()) ** 2
        assert torch.allclose(x[t], expect, rtol=0, atol=1e-14)
    # k = 0: the reset-carried target u + θ prev(Δa)
    assert torch.allclose(U.gated_targets(u, a_fwd, a, z, 1.3, 0.0), u + 1.3 * U.prev(a - a_fwd))


def test_gated_weight_block_is_the_proximal_least_squares_minimiser(monkeypatch):
    """One sweep of one hidden layer: W_1 after the block (before the step) minimises
    (ρ/2)Σ‖x − W a_0‖² + (ρμ/2)‖W − W_prev‖² for the gated targets x, checked against lstsq."""
    g = torch.Generator().manual_seed(3)
    T, N, sizes = 6, 40, [10, 7, 3]
    frames = (torch.rand(T, N, sizes[0], generator=g) < 0.4).double()
    y = torch.nn.functional.one_hot(torch.arange(N) % 3, 3).double()
    s = ADMMSettings(dtype="float64", target_gate=5.0, input_format="dense", init_rate=None, grow_every=0)
    cache = S.SolverCache()
    state = S.init_state(frames, y, sizes, s, torch.Generator().manual_seed(1), cache)
    W_prev = state.weights[0].clone()
    a_fwd, z_fwd = state.spikes[0].clone(), state.potentials[0].clone()
    u = frames @ W_prev.T
    S.parallel_hidden(state, frames, y, s, cache, torch.Generator())
    x = U.gated_targets(u, a_fwd, state.spikes[0], z_fwd, s.theta, s.target_gate)
    A = frames.reshape(-1, sizes[0])
    G = A.T @ A
    mu = U.ridge_value(G, s.ridge)
    # minimise ‖X − A Wᵀ‖² + μ‖W − W_prev‖² as one stacked least-squares problem
    lhs = torch.cat([A, mu ** 0.5 * torch.eye(sizes[0], dtype=torch.float64)])
    rhs = torch.cat([x.reshape(-1, sizes[1]), mu ** 0.5 * W_prev.T])
    W_ref = torch.linalg.lstsq(lhs, rhs).solution.T
    assert torch.allclose(state.weights[0], W_ref, rtol=0, atol=1e-9 * float(W_ref.abs().max()))


def test_bad_gate_is_a_one_line_error():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(SettingsError) as e:
            ADMMSettings(target_gate=bad)
        assert "target_gate" in str(e.value) and "\n" not in str(e.value)
    assert ADMMSettings.paper().target_gate == 0.0
