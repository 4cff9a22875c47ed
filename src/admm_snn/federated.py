"""Federated ADMM: K clients that share only their weights (consensus ADMM over W).

Each client k holds its own recordings and everything per sample (potentials, spikes, the output
dual λ); no data, state, Gram matrix or cross sum ever leaves it. The clients agree on the weights by
consensus ADMM (Boyd et al., "Distributed optimization and statistical learning via ADMM", §7):

    minimise Σ_k f_k(W^k)   subject to   W^k = Z  for every k

where f_k is client k's relaxed problem (its augmented Lagrangian of spec §2, minimised over its own
states) plus its share of the weight regulariser. Each client keeps local weights W^k and a scaled
dual U^k per layer; one round is

  1. local: ``local_iterations`` iterations of the single-process solver (``solver.iterate``: the
     same schedule, spike/potential/output/dual updates, re-projection, step rules) on the client's
     data, with every weight step replaced by a consensus step towards V^k = Z − U^k (below);
  2. coordinator: Z = Σ_k w_k (W^k + U^k) / Σ_k w_k with w_k ∝ tr G_k (one all-reduce of the
     weights and the w_k only);
  3. local: U^k ← U^k + W^k − Z.

Consensus weight step (exact form). With G_k = Σ_t Σ_{i∈k} a_{l-1,t} a_{l-1,t}ᵀ and
C_k = Σ_t Σ_{i∈k} x_{l,t} a_{l-1,t}ᵀ (plus (1/ρ_L) λ a_{L-1,T}ᵀ for the output layer), the W-part of
client k's Lagrangian is (ρ/2)[tr(W G_k Wᵀ) − 2 tr(W C_kᵀ)] + (ρ μ_k/2)‖W‖² (μ_k = ridge·tr(G_k)/n); adding
the consensus term (ρ κ_k/2)‖W − Z + U^k‖² and setting the gradient to zero,

    ρ (W G_k − C_k) + ρ μ_k W + ρ κ_k (W − Z + U^k) = 0
    ⇒  W^k = (C_k + κ_k (Z − U^k)) (G_k + (μ_k + κ_k) I)^{-1},      κ_k = consensus · tr(G_k)/n

(Cholesky; the input layer's factor is kept, its Gram never changes). This is the brief's
(C_k + ρ_c'(Z − U^k))(G_k + ρ_c' I)^{-1} plus the client's ridge; the ridges add up
(Σ_k μ_k = ridge·tr(Σ_k G_k)/n is the single-process ridge), so Σ_k f_k is the single-process objective.
It is used for hidden layers with the ridge (``proximal=False``, e.g. ``--preset paper``) and for the
output layer with ``output_solve`` "potentials"/"sweep".

Proximal hidden layers (``proximal=True``, the default settings). The solver's step minimises
f_k + (ρ μ_k/2)‖W − W_prev‖²; replacing the anchor W_prev by V^k = Z − U^k gives exactly the consensus
step above with penalty κ_k = μ_k, so the client runs the solver's own update_weights with that anchor
(keeping its ridge, step rule and extrapolation).

Joint output block (``output_solve="joint"``, the default). Eliminating the output potentials leaves
(updates.joint_output_statistics) the ridge regression (ρ/(ρ+2K))[tr(W G_S Wᵀ) − 2 tr(W C_Sᵀ)] + (ρμ/2)‖W‖²
on the leaky sums S (K = Σ_t δ^{2(T−t)}); with the consensus term (ρ_c/2)‖W − Z + U^k‖² its minimiser is

    W^k = (C_S + κ (Z − U^k)) (G_S + (μ_S + κ) I)^{-1},   μ_S = μ(ρ+2K)/2,  κ = ρ_c (ρ+2K)/(2ρ),

with κ = consensus · tr(G_S)/n; the output potentials then follow by the solver's exact T×T solve.

Exact blocks (``block_rounds`` > 0, the default). Every weight block is itself a convex quadratic
given the states: client k's part is f_k(W) = ½ tr(W G_k Wᵀ) − tr(W C_kᵀ) + (μ_k/2)‖W − A‖² (A the
proximal anchor, the common previous weights, or 0 for a ridge; the joint output block with G_S, C_S,
μ_S), and Σ_k f_k is the centralised block. So the clients solve each block together, by up to
``block_rounds`` rounds of consensus ADMM on that block alone, inside the sweep, before the next block:

    W^k = (C_k + μ_k A + κ_k (Z − U^k)) (G_k + (μ_k + κ_k) I)^{-1}     (a factor per block; the input
                                                                        layer's is kept for the run)
    Z   = Σ_k κ_k (W^k + U^k) / Σ_k κ_k,   U^k ← U^k + W^k − Z    (κ_k = consensus·(tr G_k / n + 3μ_k))

stopping when both the change ‖Z − Z_prev‖ and the primal residual (RMS over clients of ‖W^k − Z‖,
sent along with the next round's weights) are ≤ ``block_tol`` times ‖Z − A‖ (proximal blocks: the
relative step rule normalises W* − A, so that difference must be accurate) or ‖Z‖ (every client sees
the same totals, so they stop in the same round).
Every client then holds Z, the weights a centralised run would compute from the same states, and the
solver's step rule (e.g. the relative step) acts on it identically everywhere: the federated run follows
the centralised one up to the inner tolerance, while only weight-sized messages travel (more of them:
one per inner round and layer). ``block_rounds=0`` keeps the classic one-consensus-round-per-iteration
scheme below.

Inexact steps. When the solver's hidden step is not the exact minimiser (``step_rule="relative"`` or
``weight_step`` ≠ 1: an extrapolated step from the anchor, as in the default settings), the hidden
layers' U^k would accumulate the steps themselves and drift; their duals are then kept at zero and
every client restarts each round from Z (W^k ← Z after the average): a federated average of one (or
``local_iterations``) solver step(s) per round, each computed from the client's own statistics. The
output layer's step is always exact and keeps its dual. Z's weights w_k ∝ tr G_k make clients with
more (or more active) data weigh more, as FedAvg's n_k; for exact steps they are the κ_k of the
penalties, as the Z-minimisation of Σ_k (κ_k/2)‖W^k − Z + U^k‖² requires.

What is communicated per round: one float64 all-reduce of Σ_l (n_l · n_{l-1} + 1) numbers (the weighted
W^k + U^k of every layer and the w_k). Metrics (accuracy counts, Lagrangian, consensus residuals) take
one more small all-reduce, counted separately.

Data split (simulation): :func:`client_indices` gives each client its part of one data set: "iid"
(stratified, every client sees every digit), "classes" (the digits dealt in contiguous blocks:
client k of K gets np.array_split(range(10), K)[k], e.g. {2k, 2k+1} for K = 5 and {0..4}, {5..9} for
K = 2), or "dirichlet" (label skew: the recordings of each digit are shared out in proportions drawn from
Dirichlet(α, ..., α); small α = strong skew).

Implementation note: the consensus steps are put in place of ``solver.update_weights`` and
``solver.update_output_joint_weights`` for the duration of each ``solver.iterate`` call (module
globals the schedules look up at call time), so the local iterations follow the solver as it evolves;
a hook on SolverCache would be cleaner.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .admm import solver as S
from .admm import updates as U
from .admm.settings import ADMMSettings
from .admm.state import ADMMState
from .distributed import DEFAULT_TIMEOUT_S, Comm, _write_jsonl, connect, fault_hook
from .distributed import shard_bounds, step_together
from .errors import SettingsError

DEFAULT_CONSENSUS = 1.0
DEFAULT_BLOCK_ROUNDS = 100
DEFAULT_BLOCK_TOL = 1e-4
PARTITIONS = ("iid", "classes", "dirichlet")


# ----------------------------------------------------------------------------------------------------
# Data split over clients
# ----------------------------------------------------------------------------------------------------

def client_indices(labels: torch.Tensor, n_clients: int, client: int, scheme: str = "iid", seed: int = 0,
                   alpha: float = 0.5, n_classes: int | None = None) -> torch.Tensor:
    """Sorted indices of the samples client ``client`` of ``n_clients`` holds (see the module doc).
    Every client computes the same partition from the same ``seed``; the parts are disjoint and cover
    every sample."""
    from .data import stratified_split
    if scheme not in PARTITIONS:
        raise SettingsError(f"partition {scheme!r} is not one of {', '.join(PARTITIONS)}")
    K = int(n_clients)
    if not (0 <= client < K):
        raise SettingsError(f"client {client} is outside 0..{K - 1}")
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    n_classes = int(n_classes or (int(labels.max()) + 1 if labels.numel() else 1))
    if scheme == "iid":
        idx = stratified_split(labels, [1.0 / K] * K, seed)[client]
    elif scheme == "classes":
        if K > n_classes:
            raise SettingsError(f"--partition classes deals {n_classes} classes to {K} clients; use at most "
                                f"{n_classes} clients or --partition dirichlet")
        mine = torch.as_tensor(np.array_split(np.arange(n_classes), K)[client])
        idx = torch.nonzero(torch.isin(labels, mine), as_tuple=True)[0]
    else:
        if not (alpha > 0):
            raise SettingsError(f"--dirichlet-alpha {alpha} must be > 0")
        rng = np.random.default_rng(seed)
        parts = []
        for c in range(n_classes):
            ids = np.nonzero(labels.numpy() == c)[0]
            rng.shuffle(ids)
            p = rng.dirichlet([alpha] * K)
            cuts = np.round(np.cumsum(p) * len(ids)).astype(int)
            lo = 0 if client == 0 else cuts[client - 1]
            parts.append(ids[lo:cuts[client]])
        idx = torch.as_tensor(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    idx = torch.sort(idx.to(torch.int64)).values
    if idx.numel() == 0:
        raise SettingsError(f"client {client} of {K} gets no training samples with partition {scheme!r}; "
                            "use more data, fewer clients or a larger --dirichlet-alpha")
    return idx


# ----------------------------------------------------------------------------------------------------
# The consensus weight step
# ----------------------------------------------------------------------------------------------------

@dataclass
class ConsensusState:
    """Client-side consensus variables: Z (the agreed weights, every client has the same), U^k (this
    client's scaled duals), κ_k (explicit consensus penalties, fixed at first use), ``weight`` (this
    client's weight of each layer in the Z average, ∝ tr G_k) and ``dual`` (whether U is updated, per
    layer). Z and U are kept in the Gram dtype."""

    Z: list[torch.Tensor]
    U: list[torch.Tensor]
    consensus: float
    dual: list[bool]
    kappa: list[float | None] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    input_gram: torch.Tensor | None = None
    input_factor: torch.Tensor | None = None
    input_trace: float | None = None

    def target(self, l: int) -> torch.Tensor:
        """V = Z − U^k: the point the consensus term pulls layer l's weights towards."""
        return self.Z[l] - self.U[l]


def hidden_step_is_exact(settings: ADMMSettings) -> bool:
    """True when the solver's hidden weight step is the exact block minimiser (no extrapolation), so
    that the consensus duals U^k of the hidden layers are meaningful."""
    return not settings.steps_hidden_weights


def _trace_gram(state: ADMMState, frames, l: int, cons: "ConsensusState") -> float:
    """tr G_k of layer l's update: Σ over t and samples of ‖a_{l-1}‖² (the frames for l = 0, once)."""
    if l == 0 and cons.input_trace is not None:
        return cons.input_trace
    a = state.layer_inputs(frames, l)
    value = float(torch.linalg.vector_norm(a, dtype=torch.float64) ** 2)
    if l == 0:
        cons.input_trace = value
    return value


def _solve(G, rhs, shift, factor=None):
    if factor is None:
        factor = U.cholesky(G + shift * torch.eye(G.shape[0], dtype=G.dtype, device=G.device),
                            "Gram matrix of the consensus weight update")
    return torch.cholesky_solve(rhs.T.contiguous(), factor).T, factor


def consensus_update_weights(state: ADMMState, frames, settings: ADMMSettings, cons: ConsensusState, l: int) -> None:
    """Explicit consensus step from this client's sums only (ridge hidden layers and the output layer
    without the joint solve):  W = (C_k + κ_k V) (G_k + (μ_k + κ_k) I)^{-1},  V = Z − U^k."""
    gdt = S.DTYPES[settings.gram_dtype]
    out = l == state.n_layers - 1
    first = l == 0
    G = C = None
    need_gram = not (first and cons.input_gram is not None)
    for sl in S._chunks(frames.shape[1], settings.chunk_size):
        inputs = state.layer_inputs(frames, l)[:, sl]
        x = U.targets(state.potentials[l][:, sl], None if out else state.spikes[l][:, sl], settings.delta,
                      settings.theta)
        g, c = U.weight_statistics(inputs, x, gdt, state.dual[sl] if out else None, settings.output_rho,
                                   gram=need_gram, cross_dtype=S.DTYPES[settings.cross_product_dtype])
        G = g if G is None else (G if g is None else G + g)
        C = c if C is None else C + c
    if first:
        if cons.input_gram is None:
            cons.input_gram = G
        G = cons.input_gram
    n = G.shape[0]
    mu = U.ridge_value(G, settings.output_ridge if out else settings.ridge)
    if cons.kappa[l] is None:
        cons.kappa[l] = cons.consensus * float(torch.diagonal(G).sum()) / max(n, 1) + 1e-12
    V = cons.target(l)
    W, factor = _solve(G, C + cons.kappa[l] * V, mu + cons.kappa[l], cons.input_factor if first else None)
    if first:
        cons.input_factor = factor
    W = W.to(state.weights[l].dtype)
    if not out and not hidden_step_is_exact(settings):  # the solver's step rule, from the consensus point
        W = U.extrapolate(V.to(W.dtype), W, settings.weight_step,
                          relative=getattr(settings, "step_rule", "fixed") == "relative")
    state.weights[l] = W


def _joint_output_sums(state: ADMMState, frames, y, settings: ADMMSettings):
    """(G_S, C_S, μ_S) of the joint output block from this client's samples only."""
    gdt = S.DTYPES[settings.gram_dtype]
    G = C = None
    for sl in S._chunks(frames.shape[1], settings.chunk_size):
        g, c = U.joint_output_statistics(state.layer_inputs(frames, state.n_layers - 1)[:, sl], y[sl],
                                         state.dual[sl], settings.delta, settings.output_rho, gdt)
        G, C = (g, c) if G is None else (G + g, C + c)
    mu_S, _ = U.joint_output_ridge(G, settings.output_ridge, settings.delta, settings.output_rho, frames.shape[0])
    return G, C, mu_S


def consensus_update_output_joint(state: ADMMState, frames, y, settings: ADMMSettings, cons: ConsensusState) -> None:
    """W_L = (C_S + κ V) (G_S + (μ_S + κ) I)^{-1}: the joint output block with the consensus term."""
    G, C, mu_S = _joint_output_sums(state, frames, y, settings)
    L = state.n_layers - 1
    if cons.kappa[L] is None:
        cons.kappa[L] = cons.consensus * float(torch.diagonal(G).sum()) / max(G.shape[0], 1) + 1e-12
    cons.weight[L] = float(torch.diagonal(G).sum())
    W, _ = _solve(G, C + cons.kappa[L] * cons.target(L), mu_S + cons.kappa[L])
    state.weights[-1] = W.to(state.weights[-1].dtype)


def consensus_block(G: torch.Tensor, C: torch.Tensor, mu: float, anchor: torch.Tensor | None, start: torch.Tensor,
                    comm: Comm, consensus: float, rounds: int, tol: float, factor: torch.Tensor | None = None):
    """Solve min_W Σ_k [½ tr(W G_k Wᵀ) − tr(W C_kᵀ) + (μ_k/2)‖W − A‖²] across the clients by consensus
    ADMM, each client passing only its own (G_k, C_k, μ_k) here (see the module doc for the rounds).
    ``start``: the initial Z (the same on every client). Returns (Z, factor, rounds run); the factor of
    G_k + (μ_k + κ_k) I can be passed back for a Gram that does not change (the input layer)."""
    n = G.shape[0]
    # κ_k on the scale of the block's curvature: its data part tr G_k / n plus its ridge μ_k (measured on
    # N-MNIST, 2 non-IID clients: with κ = tr G_k/n a proximal block with ridge 10 needs > 300 rounds to
    # 1e-6, with tr G_k/n + 3μ_k under 100; for the output block, ridge 0.1, both are about equally fast)
    kappa = consensus * (float(torch.diagonal(G).sum()) / max(n, 1) + 3.0 * float(mu)) + 1e-12
    if factor is None:
        factor = U.cholesky(U.plus_diagonal(G, mu + kappa), "Gram matrix of the federated weight block")
    rhs = C + mu * anchor.to(C.dtype) if anchor is not None else C
    Z = Z0 = start.to(C.dtype)
    Uk = torch.zeros_like(Z)
    primal_sq = 0.0  # this client's ‖W^k − Z‖² of the previous round, sent with the next round's weights
    done = 0
    for done in range(1, rounds + 1):
        W = torch.cholesky_solve((rhs + kappa * (Z - Uk)).T.contiguous(), factor).T
        extra = torch.tensor([kappa, primal_sq, 1.0], dtype=C.dtype, device=C.device)
        total = comm.all_reduce(torch.cat([(kappa * (W + Uk)).reshape(-1), extra]), "sum", "weights")
        Z_new = (total[:-3] / total[-3]).reshape(Z.shape)
        Uk = Uk + W - Z_new
        # relative to the block's move from the proximal anchor (the step rule normalises W* − W_prev, so
        # that difference is what has to be accurate), else to ‖Z‖
        scale = float(torch.linalg.vector_norm(Z_new - Z0 if anchor is not None else Z_new)) + 1e-30
        change = float(torch.linalg.vector_norm(Z_new - Z)) / scale
        primal = (float(total[-2]) / float(total[-1])) ** 0.5 / scale  # previous round's, RMS over clients
        primal_sq = float(torch.linalg.vector_norm(W - Z_new) ** 2)
        Z = Z_new
        # both residuals small (every client sees the same totals, so every client stops in the same round)
        if done > 1 and change <= tol and primal <= tol:
            break
    return Z, factor, done


class _ConsensusSolver:
    """Runs ``solver.iterate`` with its two weight steps replaced by consensus steps (while the call
    lasts): ``solver.update_weights`` and ``solver.update_output_joint_weights`` are module globals that
    the schedules look up at call time. Proximal hidden layers keep the solver's own step (with its
    ridge, step rule and extrapolation) with the anchor W_prev replaced by V = Z − U^k; everything else
    uses the explicit steps above. Raises if the solver did not call them (it was restructured)."""

    def __init__(self, cons: ConsensusState, comm: Comm | None = None, rounds: int = 0, tol: float = DEFAULT_BLOCK_TOL):
        self.cons, self.calls = cons, 0
        self.comm, self.rounds, self.tol = comm, rounds, tol
        self.input_factor = None
        self.rounds_run: list[int] = []

    def _block(self, state, l, G, C, mu, anchor, first=False):
        """Exact block across clients (``block_rounds`` > 0): every client ends with the same Z."""
        factor = self.input_factor if first else None
        Z, factor, done = consensus_block(G, C, mu, anchor, state.weights[l], self.comm, self.cons.consensus,
                                          self.rounds, self.tol, factor)
        if first:
            self.input_factor = factor
        self.rounds_run.append(done)
        state.weights[l] = Z.to(state.weights[l].dtype)

    def update_weights(self, state, frames, settings, cache, l, stats=None, *args, **kwargs):
        self.calls += 1
        if S.frozen(state, settings, l):  # layer-by-layer growth: not grown yet, every client keeps it
            return
        cons = self.cons
        out = l == state.n_layers - 1
        if self.rounds:
            G, C = stats if stats is not None else S.layer_weight_sums(state, frames, settings, cache, l)
            if l == 0:
                if cache.input_gram is None:  # this client's own fixed input Gram
                    cache.input_gram = S.input_gram(state, frames, settings, cache)
                G = cache.input_gram
            mu = U.ridge_value(G, settings.output_ridge if out else settings.ridge)
            anchor = state.weights[l] if (settings.proximal and not out) else None
            self._block(state, l, G, C, mu, anchor, first=l == 0)
            cons.weight[l] = 1.0
            return
        if l < state.n_layers - 1 and settings.proximal:
            state.weights[l] = cons.target(l).to(state.weights[l].dtype)  # the proximal anchor
            self._orig_weights(state, frames, settings, cache, l, *args, **kwargs)
        else:
            consensus_update_weights(state, frames, settings, cons, l)
        cons.weight[l] = _trace_gram(state, frames, l, cons)

    def update_output_joint_weights(self, state, frames, y, settings, cache=None, *args, **kwargs):
        self.calls += 1
        if self.rounds:
            G, C, mu_S = _joint_output_sums(state, frames, y, settings)
            self._block(state, state.n_layers - 1, G, C, mu_S, None)
            self.cons.weight[-1] = 1.0
            return
        consensus_update_output_joint(state, frames, y, settings, self.cons)

    def iterate(self, state, frames, y, settings, cache, generator) -> None:
        self._orig_weights, self._orig_joint = S.update_weights, S.update_output_joint_weights
        self.calls = 0
        S.update_weights, S.update_output_joint_weights = self.update_weights, self.update_output_joint_weights
        try:
            S.iterate(state, frames, y, settings, cache, generator, truncate=False)  # consensus indexes every layer
        finally:
            S.update_weights, S.update_output_joint_weights = self._orig_weights, self._orig_joint
        if self.calls < state.n_layers:
            raise RuntimeError("admm_snn.federated: solver.iterate no longer calls solver.update_weights / "
                               "update_output_joint_weights for every layer; the consensus step needs updating")


def consensus_step(state: ADMMState, cons: ConsensusState, comm: Comm) -> dict:
    """Z = Σ_k w_k (W^k + U^k) / Σ_k w_k per layer (one all-reduce of the weights and the w_k),
    U^k += W^k − Z where the dual is on. Returns this client's ‖W^k − Z‖², ‖Z − Z_prev‖², ‖Z‖²."""
    gdt = cons.Z[0].dtype
    parts = [(k * (w.to(gdt) + u)).reshape(-1) for k, w, u in zip(cons.weight, state.weights, cons.U)]
    parts.append(torch.tensor(cons.weight, dtype=gdt, device=cons.Z[0].device))
    total = comm.all_reduce(torch.cat(parts), "sum", "weights")
    wsum = total[-len(cons.weight):]
    off, primal, change, norm = 0, 0.0, 0.0, 0.0
    for l, z_old in enumerate(cons.Z):
        n = z_old.numel()
        z = (total[off:off + n] / wsum[l]).reshape(z_old.shape)
        off += n
        d = state.weights[l].to(gdt) - z
        if cons.dual[l]:
            cons.U[l] = cons.U[l] + d
        else:  # no dual: the client restarts from the consensus weights (FedAvg of solver steps)
            state.weights[l] = z.to(state.weights[l].dtype)
        primal += float((d ** 2).sum())
        change += float(((z - z_old) ** 2).sum())
        norm += float((z ** 2).sum())
        cons.Z[l] = z
    return {"primal_sq": primal, "change_sq": change, "norm_sq": norm}


# ----------------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------------

def _round_metrics(state, X, y, lab, settings, cons: ConsensusState, res: dict, comm: Comm, val, n_val_local) -> dict:
    """Metrics of one round, summed over clients: accuracy and firing rate of the consensus model Z on
    every client's training data and on the validation data, accuracy of each client's own W^k on its
    data (mean), the sum of the local Lagrangians, and the consensus residuals
    primal = sqrt(Σ_k ‖W^k − Z‖² / (K ‖Z‖²)), change = ‖Z − Z_prev‖ / ‖Z‖."""
    from .metrics import forward_counts
    from .train import lagrangian_of
    p = settings.lif
    Zw = [z.to(state.weights[0].dtype) for z in cons.Z]
    n, T = X.shape[1], X.shape[0]
    cz = forward_counts(Zw, X, lab, p)  # counts, added over clients: exact accuracies and rates
    local_correct = forward_counts(state.weights, X, lab, p)["correct"]
    terms = lagrangian_of(state, X, y, settings)
    vals = [terms["lagrangian"], terms["loss"], float(cz["correct"]), float(local_correct), *cz["spikes"],
            res["primal_sq"], float(n)]
    if val is not None:
        vals += [float(forward_counts(Zw, val[0], val[1], p)["correct"]), float(n_val_local)]
    v = comm.all_reduce(torch.tensor(vals, dtype=torch.float64), kind="metrics").tolist()
    H = len(cz["spikes"])
    N = v[5 + H]
    widths = [z.shape[0] for z in Zw[:-1]]
    m = {"iteration": state.iteration, "lagrangian": v[0], "loss": v[1] / N, "train_accuracy": v[2] / N,
         "local_train_accuracy": v[3] / N, "firing_rate": [x / (T * N * w) for x, w in zip(v[4:4 + H], widths)]}
    norm = max(res["norm_sq"], 1e-300)
    m["consensus_primal"] = (v[4 + H] / (comm.world_size * norm)) ** 0.5
    m["consensus_change"] = (res["change_sq"] / norm) ** 0.5
    if val is not None:
        m["val_accuracy"] = v[6 + H] / max(v[7 + H], 1.0)
    return m


def train_federated(frames: torch.Tensor, labels: torch.Tensor, hidden: list[int], settings: ADMMSettings, *,
                    n_classes: int | None = None, val: tuple | None = None, out: str | Path | None = None,
                    comm: Comm | None = None, consensus: float = DEFAULT_CONSENSUS, local_iterations: int = 1,
                    block_rounds: int = DEFAULT_BLOCK_ROUNDS, block_tol: float = DEFAULT_BLOCK_TOL,
                    backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, rank: int | None = None,
                    world_size: int | None = None, init_method: str | None = None, progress: bool = False,
                    device: str = "cpu", metrics_every: int = 1, model_extra: dict | None = None, log=print):
    """Federated consensus ADMM (see the module doc) for ``settings.iterations`` rounds.

    Every client (process) calls this with ITS OWN data ``frames`` (T, N_k, n_0), ``labels`` (N_k,) and
    the same ``hidden`` and ``settings``. ``n_classes`` should be given (a client may not see every
    class). ``val`` = (frames, labels) is held-out data, split over the clients for evaluation only.
    The process group is ``comm``, the initialised default group, or one created here (see
    :func:`distributed.connect`). Returns a :class:`train.TrainResult` whose ``weights`` are the
    consensus weights Z (of the best validation round, else the last); ``state`` is this client's local
    state. Each history entry has ``consensus_bytes`` (payload of the round's weight all-reduce) and
    ``metrics_bytes``. Rank 0 writes ``out`` (metrics.jsonl, model.safetensors, summary.json).

    ``block_rounds`` > 0 (default): every weight block is solved across the clients by up to that many
    consensus rounds (to relative change ``block_tol``) inside the sweep, so the run follows the
    centralised one (see the module doc); 0: one consensus round per iteration. History entries then
    also have ``block_rounds`` (inner rounds run per block in the iteration).
    """
    from .io import save_model
    from .train import TrainResult

    if frames.dim() != 3:
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N, inputs)")
    if labels.shape != (frames.shape[1],) or frames.shape[1] < 1:
        raise SettingsError(f"labels have shape {tuple(labels.shape)}; expected ({frames.shape[1]},) with N >= 1")
    if any(h < 1 for h in hidden):
        raise SettingsError(f"hidden sizes {list(hidden)} must all be >= 1")
    if not (consensus > 0) or local_iterations < 1 or metrics_every < 1:
        raise SettingsError(f"consensus={consensus} must be > 0, local_iterations={local_iterations} and "
                            f"metrics_every={metrics_every} >= 1")
    if not isinstance(block_rounds, int) or block_rounds < 0:
        raise SettingsError(f"block_rounds={block_rounds!r} must be an integer >= 0")
    if not (block_tol >= 0):
        raise SettingsError(f"block_tol={block_tol} must be >= 0")
    created = comm is None
    if comm is None:
        comm = connect(backend, timeout_s, rank=rank, world_size=world_size, init_method=init_method, device=device)
    try:
        k = int(labels.max()) + 1
        k_all = int(comm.all_reduce(torch.tensor([float(k)], dtype=torch.float64), "max", "control")[0])
        n_classes = int(n_classes or k_all)
        dtype, gdt = S.DTYPES[settings.dtype], S.DTYPES[settings.gram_dtype]
        sizes = [frames.shape[2], *hidden, n_classes]
        X = frames.to(device=device, dtype=dtype)
        if not bool(torch.isfinite(X).all()):
            raise SettingsError("frames contain NaN or infinite values; check the input data")
        lab = labels.to(device)
        y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
        n_val_local = 0
        if val is not None:
            a, b = shard_bounds(val[0].shape[1], comm.world_size, comm.rank)
            val = (val[0][:, a:b].to(device=device, dtype=dtype), val[1][a:b].to(device))
            n_val_local = b - a
        generator = torch.Generator().manual_seed(settings.seed)
        cache = S.SolverCache()  # local: reduce stays the identity, nothing per-sample is shared
        # with exact blocks the rate calibration sums two counts over the clients (the firing rate of the
        # whole data at a trial scale: an aggregate, no per-sample value), so every client starts alike
        state = S.init_state(X, y, sizes, settings, generator, cache=cache,
                             rate_reduce=(lambda t: comm.all_reduce(t, "sum", "control")) if block_rounds else None)
        # Z⁰ = plain mean of the clients' initial weights (the hidden ones are the same seeded draws).
        flat = torch.cat([w.to(gdt).reshape(-1) for w in state.weights])
        flat = comm.all_reduce(flat, "sum", "weights") / comm.world_size
        Z, off = [], 0
        for w in state.weights:
            Z.append(flat[off:off + w.numel()].reshape(w.shape).clone())
            off += w.numel()
        L = len(Z)
        exact = hidden_step_is_exact(settings)
        # with exact blocks every client already holds Z after each block: the round's average only checks it
        cons = ConsensusState(Z, [torch.zeros_like(z) for z in Z], float(consensus),
                              dual=[exact and not block_rounds] * (L - 1) + [not block_rounds], kappa=[None] * L,
                              weight=[1.0] * L)
        if block_rounds:
            for l in range(L):
                state.weights[l] = Z[l].to(state.weights[l].dtype)
        runner = _ConsensusSolver(cons, comm, block_rounds, block_tol)
        if block_rounds and settings.init == "forward" and settings.order != "paper":
            # the single-process start fits the output block to the initial states: do it across clients
            if settings.output_solve == "joint":  # (with the hinge loss, its target rounds too)
                S.parallel_output(state, X, y, settings, cache, generator, start=True,
                                  joint=runner.update_output_joint_weights)
            else:
                runner.update_weights(state, X, settings, cache, L - 1)
                S.update_output(state, X, y, settings, cache)
            cons.Z[-1] = state.weights[-1].to(gdt).clone()
            runner.rounds_run = []
        out = Path(out) if out is not None else None
        if out is not None and comm.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").write_text("")
        best, best_it, best_score, history = [z.clone() for z in Z], 0, -1.0, []
        bar = None
        if progress and comm.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=settings.iterations, desc=f"federated x{comm.world_size}", dynamic_ncols=True)
        t_start = time.perf_counter()
        rnd = 0
        try:
            while rnd < settings.iterations:
                fault_hook(comm.rank, rnd)
                comm.where = f"round {rnd + 1}"
                b0, s0 = dict(comm.bytes), comm.seconds["weights"]

                def local_round():
                    for _ in range(local_iterations):
                        runner.iterate(state, X, y, settings, cache, generator)

                seconds = step_together(comm, local_round,
                                        lambda: f"another client stopped with an error in round {rnd + 1}")
                t1 = time.perf_counter()
                res = consensus_step(state, cons, comm)
                inner = runner.rounds_run
                runner.rounds_run = []
                comm.records.append({"iteration": rnd + 1, "seconds": seconds + time.perf_counter() - t1,
                                     "bytes": comm.bytes["weights"] - b0["weights"],
                                     "allreduce_s": comm.seconds["weights"] - s0})
                rnd += 1
                last = rnd == settings.iterations
                if rnd % metrics_every == 0 or last:
                    comm_bytes = comm.bytes["weights"] - b0["weights"]
                    m = _round_metrics(state, X, y, lab, settings, cons, res, comm, val, n_val_local)
                    m["iteration"] = rnd
                    m["seconds"] = seconds + (time.perf_counter() - t1)
                    m["wall_s"] = (history[-1]["wall_s"] if history else 0.0) + m["seconds"]
                    m["consensus_bytes"] = comm_bytes
                    m["metrics_bytes"] = (comm.bytes["metrics"] + comm.bytes["control"]
                                          - b0["metrics"] - b0["control"])
                    m["clients"] = comm.world_size
                    if block_rounds:
                        m["block_rounds"] = inner
                    history.append(m)
                    score = m.get("val_accuracy", m["train_accuracy"] if val is None else -1.0)
                    if val is None or score > best_score:
                        best, best_it, best_score = [z.clone() for z in cons.Z], rnd, score
                    if out is not None and comm.is_main:
                        _write_jsonl(out / "metrics.jsonl", m)
                    if bar is not None:
                        bar.set_postfix({"train": f"{m['train_accuracy']:.3f}", "val": f"{m.get('val_accuracy', 0):.3f}",
                                         "primal": f"{m['consensus_primal']:.2g}"}, refresh=False)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t_start
        wd = state.weights[0].dtype
        chosen = best if val is not None else cons.Z
        result = TrainResult([z.to(wd).clone() for z in chosen], [z.to(wd).clone() for z in cons.Z],
                             best_it if val is not None else rnd, history, rnd, wall, state=state)
        if out is not None and comm.is_main:
            extra = {"federated": {"clients": comm.world_size, "consensus": consensus,
                                   "local_iterations": local_iterations, "block_rounds": block_rounds,
                                   "block_tol": block_tol, "bytes": dict(comm.bytes),
                                   "consensus_bytes_per_round": history[-1]["consensus_bytes"] if history else 0},
                     **(model_extra or {})}
            save_model(out / "model.safetensors", result.weights, settings.delta, settings.theta,
                       {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **extra})
            summary = {"iterations": rnd, "best_iteration": result.best_iteration, "wall_s": wall, "sizes": sizes,
                       "settings": settings.to_dict(), "final": history[-1] if history else None, **extra}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return result
    finally:
        if created:
            comm.close()
