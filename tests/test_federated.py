"""Federated consensus ADMM (admm_snn.federated): the consensus steps are exact minimisers, the client
splits are partitions, and 2 or 4 Gloo clients that share only weights learn real N-MNIST."""

from __future__ import annotations

import json
import os

import pytest
import torch

from admm_snn import distributed as D
from admm_snn import launch as L
from admm_snn import federated as F
from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.train import train


def _problem(seed=0, N=12, T=5, sizes=(7, 4, 3)):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(T, N, sizes[0], generator=g, dtype=torch.float64) < 0.4).double()
    labels = torch.arange(N) % sizes[-1]
    y = torch.nn.functional.one_hot(labels, sizes[-1]).double()
    s = ADMMSettings(dtype="float64", proximal=False, step_rule="fixed", weight_step=1.0, momentum=0.0, ridge=0.05,
                     ridge_out=0.02, rho=0.7, rho_out=1.3)
    state = S.init_state(X, y, list(sizes), s, g)
    state.dual = torch.randn(state.dual.shape, generator=g, dtype=torch.float64)  # exercise the λ terms
    Z = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in state.weights]
    Uk = [0.3 * torch.randn(w.shape, generator=g, dtype=torch.float64) for w in state.weights]
    cons = F.ConsensusState(Z, Uk, 0.8, dual=[True, True], kappa=[None, None], weight=[1.0, 1.0])
    return X, y, s, state, cons


def _grad(f, W):
    W = W.clone().requires_grad_(True)
    f(W).backward()
    return W.grad


@pytest.mark.parametrize("l", [0, 1])
def test_explicit_consensus_step_is_exact_minimiser(l):
    """W = (C + κV)(G + (μ+κ)I)^{-1} minimises ½Σ‖x − W a‖² + (μ/2)‖W‖² + (κ/2)‖W − V‖² (+ output λ term)."""
    X, y, s, state, cons = _problem()
    out = l == state.n_layers - 1
    a = state.layer_inputs(X, l).reshape(-1, state.weights[l].shape[1])
    x = U.targets(state.potentials[l], None if out else state.spikes[l], s.delta, s.theta)
    x = x.reshape(-1, state.weights[l].shape[0])
    aT = state.layer_inputs(X, l)[-1]
    F.consensus_update_weights(state, X, s, cons, l)
    W = state.weights[l]
    mu = U.ridge_value(a.T @ a, s.output_ridge if out else s.ridge)
    kappa, V = cons.kappa[l], cons.target(l)
    assert kappa == pytest.approx(cons.consensus * float((a * a).sum()) / a.shape[1], rel=1e-9)
    rho = s.output_rho if out else 1.0  # the λ term enters divided by ρ_L, as in weight_statistics

    def J(W):
        j = 0.5 * ((x - a @ W.T) ** 2).sum() + 0.5 * mu * (W ** 2).sum() + 0.5 * kappa * ((W - V) ** 2).sum()
        if out:
            j = j - (state.dual * (aT @ W.T)).sum() / rho
        return j

    g = _grad(J, W)
    assert float(g.abs().max()) < 1e-9 * max(1.0, float(mu + kappa) * float(W.abs().max()))
    assert float(_grad(J, W + 1e-3).norm()) > 1e-6  # a nearby point is not stationary


def test_joint_output_consensus_step_is_exact_minimiser():
    """W = (C_S + κV)(G_S + (μ_S+κ)I)^{-1} minimises (ρ/(ρ+2K))Σ‖W S − y − λ/ρ‖² + (ρμ/2)‖W‖² + (ρ_c/2)‖W − V‖²
    with μ = 2μ_S/(ρ+2K) and ρ_c = 2ρκ/(ρ+2K)."""
    X, y, s, state, cons = _problem(seed=3)
    F.consensus_update_output_joint(state, X, y, s, cons)
    W = state.weights[-1]
    T, rho, delta = X.shape[0], s.output_rho, s.delta
    Ssum = U.leaky_sum(state.spikes[-1], delta)
    K = sum(delta ** (2 * j) for j in range(T))
    mu_S, _ = U.joint_output_ridge(Ssum.T @ Ssum, s.output_ridge, delta, rho, T)
    mu = 2 * mu_S / (rho + 2 * K)
    rho_c = 2 * rho * cons.kappa[1] / (rho + 2 * K)
    V = cons.target(1)

    def J(W):
        r = Ssum @ W.T - y - state.dual / rho
        return (rho / (rho + 2 * K)) * (r ** 2).sum() + 0.5 * rho * mu * (W ** 2).sum() + 0.5 * rho_c * ((W - V) ** 2).sum()

    assert float(_grad(J, W).abs().max()) < 1e-9
    assert float(_grad(J, W + 1e-3).norm()) > 1e-6


def test_client_indices_partitions():
    labels = torch.arange(200) % 10
    for scheme, K in (("iid", 3), ("classes", 4), ("classes", 5), ("dirichlet", 4)):
        parts = [F.client_indices(labels, K, k, scheme, seed=1, alpha=0.5) for k in range(K)]
        allidx = torch.cat(parts)
        assert torch.equal(torch.sort(allidx).values, torch.arange(200)), scheme
    five = [set(labels[F.client_indices(labels, 5, k, "classes")].tolist()) for k in range(5)]
    assert five == [{2 * k, 2 * k + 1} for k in range(5)]
    two = [set(labels[F.client_indices(labels, 2, k, "classes")].tolist()) for k in range(2)]
    assert two == [{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}]
    iid = [set(labels[F.client_indices(labels, 3, k, "iid")].tolist()) for k in range(3)]
    assert all(p == set(range(10)) for p in iid)
    with pytest.raises(Exception, match="at most 10 clients"):
        F.client_indices(labels, 11, 0, "classes")


def test_one_client_follows_the_single_process_solver():
    """With one client and a vanishing consensus penalty, a federated run is the single-process run."""
    g = torch.Generator().manual_seed(5)
    X = (torch.rand(8, 60, 30, generator=g) < 0.3).float()
    labels = torch.arange(60) % 4
    s = ADMMSettings(iterations=4, dtype="float64")
    ref = train(X, labels, [12], s, progress=False)
    fed = F.train_federated(X, labels, [12], s, consensus=1e-9)
    for a, b in zip(fed.weights, ref.weights):
        assert float((a - b).norm() / b.norm()) < 1e-4
    assert [h["consensus_bytes"] for h in fed.history] == [0] * 4  # one process: nothing sent


def test_paper_preset_runs_and_solver_is_restored():
    """The explicit consensus path (ridge hidden weights, sequential schedule, output sweep, dual) runs
    inside solver.iterate, and the solver's own weight steps are back in place afterwards."""
    g = torch.Generator().manual_seed(2)
    X = (torch.rand(6, 30, 20, generator=g) < 0.3).float()
    labels = torch.arange(30) % 3
    before = (S.update_weights, S.update_output_joint_weights)
    s = ADMMSettings.paper(iterations=3, dtype="float64")
    res = F.train_federated(X, labels, [6], s, consensus=0.5)
    assert (S.update_weights, S.update_output_joint_weights) == before
    assert len(res.history) == 3 and all(bool(torch.isfinite(w).all()) for w in res.weights)
    assert float(res.weights[0].norm()) > 0  # W starts at 0 (uniform init): the consensus steps moved it


@pytest.fixture(scope="module")
def framed_cache(nmnist_root, tmp_path_factory):
    """A framing cache filled once here, so the client processes read it instead of each framing."""
    from admm_snn.data import FrameSettings, load_nmnist
    cache = tmp_path_factory.mktemp("nmnist-cache")
    load_nmnist(nmnist_root, "train", FrameSettings(10, 10.0, 10.0), cache_dir=cache, limit=300)
    return cache


@pytest.mark.parametrize("clients,partition,rounds", [(2, "iid", 0), (4, "iid", 0), (4, "classes", 30)])
def test_clients_learn_real_nmnist(nmnist_root, framed_cache, tmp_path, capfd, clients, partition, rounds):
    """Both federated modes learn; the bytes sent are exactly the weight payloads (one consensus round per
    iteration, or that plus every inner round of every exact block)."""
    out = tmp_path / "run"
    argv = ["--federated", "--partition", partition, "--dataset", "nmnist", "--data-dir", str(nmnist_root),
            "--cache-dir", str(framed_cache), "--limit", "300", "--time-steps", "10", "--hidden", "32",
            "--iterations", "6", "--val-fraction", "0", "--test-fraction", "0.25", "--out", str(out), "--quiet",
            "--timeout", "120", "--block-rounds", str(rounds)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(D.FAULT_ENV, None)
    assert L.launch_local(clients, argv, env=env) == 0
    assert f"{clients} clients" in capfd.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"]["n_test"] >= 70
    assert summary["test_accuracy"] >= 0.4  # chance is 0.1
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 6 and hist[-1]["clients"] == clients
    per_round = (32 * 2312 + 10 * 32 + 2) * 8  # the weights of both layers and their two averaging weights
    sizes = [32 * 2312, 10 * 32]
    for h in hist:
        # an exact block's round sends the layer's κ(W + U) and three numbers (κ, ‖W − Z‖², a count);
        # the hidden layer's block comes first in each iteration, then the output's, once per round of
        # the hinge loss's targets (ADMMSettings.margin_rounds)
        inner = sum(r * (sizes[min(i, 1)] + 3) * 8 for i, r in enumerate(h.get("block_rounds", [])))
        assert h["consensus_bytes"] == per_round + inner
        assert len(h.get("block_rounds", [])) == (1 + ADMMSettings().margin_rounds if rounds else 0)
        assert all(1 <= r <= rounds for r in h.get("block_rounds", []))
    assert summary["federated"]["consensus_bytes_per_round"] == hist[-1]["consensus_bytes"]
    assert summary["partition"] == partition


def test_exact_blocks_follow_the_centralised_run(nmnist_root, framed_cache, tmp_path):
    """Two non-IID clients (disjoint digits) that solve every weight block together by consensus rounds
    end with the weights of the single-process run on all their data (to the inner tolerance), though
    only weights (and two rate counts at the start) travel."""
    from admm_snn.cli import main
    from admm_snn.io import load_model
    common = ["--dataset", "nmnist", "--data-dir", str(nmnist_root), "--cache-dir", str(framed_cache),
              "--limit", "300", "--time-steps", "10", "--hidden", "8", "--iterations", "2",
              "--val-fraction", "0", "--test-fraction", "0.25", "--quiet", "--dtype", "float64"]
    # federated runs do not augment and have the loss at T: the centralised run without the default shift
    # augmentation and without N-MNIST's default loss on 3 steps
    assert main(["train", *common, "--augment-shift", "0", "--loss-steps", "1", "--out", str(tmp_path / "central")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(D.FAULT_ENV, None)
    argv = ["--federated", "--partition", "classes", *common, "--out", str(tmp_path / "fed"), "--timeout", "120",
            "--block-rounds", "300", "--block-tol", "1e-6"]
    assert L.launch_local(2, argv, env=env) == 0
    central = load_model(tmp_path / "central")["weights"]
    fed = load_model(tmp_path / "fed")["weights"]
    for a, b in zip(fed, central):
        assert float((a - b).norm() / b.norm()) < 1e-3
    # the same run with one consensus round per iteration does not follow it
    argv[argv.index("--block-rounds") + 1] = "0"
    argv[argv.index("--out") + 1] = str(tmp_path / "rounds")
    assert L.launch_local(2, argv, env=env) == 0
    rounds = load_model(tmp_path / "rounds")["weights"]
    assert max(float((a - b).norm() / b.norm()) for a, b in zip(rounds, central)) > 1e-2
