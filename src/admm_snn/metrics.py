"""The per-iteration report, built from sums that add across processes.

Every reported figure is a function of sums over samples: counts (correct predictions, forward spikes,
spike-gap disagreements: integers, exact in float64), sums of squares (residuals, loss) and the
per-sample part of the Lagrangian. One process computes the sums over its samples
(:func:`metric_sums`); a data-parallel run adds them over processes with one all-reduce; both turn
them into the report with the same formulas (:func:`metrics_from_sums`). So the accuracies, firing
rates and spike gaps of a data-parallel run are exactly those of one process on the same weights
(count / total), and the other figures equal them up to the order of the additions.

    accuracy           correct / N                       firing rate  spikes_l / (T·N·n_l)
    spike gap          #{forward spike ≠ round(a)} / (T·N·n_l)
    residual (RMS)     sqrt(Σ r² / #entries)             loss         Σ ‖z_{L,T} − y‖² / N
    Lagrangian         Σ_samples (its per-sample terms) + the weights' own terms (L1 split), once
"""

from __future__ import annotations

import torch

from .admm.lagrangian import lagrangian_terms, residual_sums
from .admm.penalties import adaptive_metrics, lagrangian_penalties
from .network import LIFParams, forward


def forward_counts(weights, frames, labels, params: LIFParams, spikes=None, chunk: int = 2048) -> dict:
    """Counts of the true forward simulation over the samples of ``frames`` (T, N, n_0), ``chunk``
    samples at a time: ``correct`` predictions, ``n`` samples, ``spikes`` per hidden layer and its
    ``units`` (T·N·n_l); with the relaxed ``spikes`` of a state, ``gap`` per hidden layer: the entries
    where the forward spike differs from round(a)."""
    n, T = frames.shape[1], frames.shape[0]
    hidden = [w.shape[0] for w in weights[:-1]]
    out = {"correct": 0, "n": n, "spikes": [0.0] * len(hidden), "units": [T * n * h for h in hidden],
           "gap": [0] * len(hidden)}
    for s in range(0, n, chunk):
        trace = forward(weights, frames[:, s:s + chunk], params)
        out["correct"] += int((trace.output[-1].argmax(1) == labels[s:s + chunk]).sum())
        for l, fa in enumerate(trace.spikes):
            out["spikes"][l] += float(fa.sum(dtype=torch.float64))  # binary: an exact count
            if spikes is not None:
                out["gap"][l] += int((fa != spikes[l][:, s:s + chunk].round()).sum())
    return out


def accuracy_and_rates(weights, frames, labels, params: LIFParams, chunk: int = 2048):
    """Accuracy of the true forward simulation and the firing rate of each hidden layer."""
    c = forward_counts(weights, frames, labels, params, chunk=chunk)
    return c["correct"] / max(c["n"], 1), [s / max(u, 1) for s, u in zip(c["spikes"], c["units"])]


def lagrangian_of(state, frames, y, settings) -> dict:
    """:func:`lagrangian_terms` with every penalty of ``settings`` (per-layer ρ_l, β_l when adapted, the
    rate and L1 terms)."""
    return lagrangian_terms(state, frames, y, *lagrangian_penalties(state, settings), settings.lif,
                            settings.output_rho, rate_penalty=settings.rate_penalty, l1=settings.l1,
                            l1_penalty=settings.l1_penalty,
                            loss_times=settings.loss_times(frames.shape[0]))


def metric_sums(state, frames, y, labels, settings, val=None, lagrangian=None) -> tuple[list[float], float]:
    """(additive sums over these samples, the Lagrangian's terms of the weights alone). The sums, in
    order: the Lagrangian's per-sample part, Σ loss, the output residual's Σ r² and entries, per layer
    the dynamics residual's Σ r² and entries, per hidden layer the spike residual's Σ r² and entries,
    the spike gap's count and entries, spikes and units; correct and N; validation correct and N."""
    p = settings.lif
    terms = (lagrangian or lagrangian_of)(state, frames, y, settings)
    own = sum(terms["l1"])  # terms of the weights only (the L1 split): counted once, not per process
    res = residual_sums(state, frames, p)
    c = forward_counts(state.weights, frames, labels, p, spikes=state.spikes)
    v = [terms["lagrangian"] - own, terms["loss"], *res["output"]]
    for sq, k in res["dynamics"]:
        v += [sq, k]
    for sq, k in res["spike"]:
        v += [sq, k]
    for g, s, u in zip(c["gap"], c["spikes"], c["units"]):
        v += [float(g), float(u), s, float(u)]
    v += [float(c["correct"]), float(c["n"])]
    if val is not None:
        cv = forward_counts(state.weights, val[0], val[1], p)
        v += [float(cv["correct"]), float(cv["n"])]
    return v, own


def metrics_from_sums(v: list[float], own: float, state, has_val: bool) -> dict:
    """The report from :func:`metric_sums`' sums (added over processes or not) and the weights' terms."""
    L, H = state.n_layers, state.n_layers - 1
    it = iter(v)
    nxt = lambda: next(it)  # noqa: E731

    def rms():
        sq, k = nxt(), nxt()
        return (sq / max(k, 1.0)) ** 0.5

    lagrangian, loss = nxt() + own, nxt()
    out = rms()
    dyn = [rms() for _ in range(L)]
    spk = [rms() for _ in range(H)]
    gap, rate = [], []
    for _ in range(H):
        g, u, s, u2 = nxt(), nxt(), nxt(), nxt()
        gap.append(g / max(u, 1.0))
        rate.append(s / max(u2, 1.0))
    correct, n = nxt(), nxt()
    m = {"iteration": state.iteration, "lagrangian": lagrangian, "loss": loss / max(n, 1.0),
         "residual_output": out, "residual_dynamics": dyn, "residual_spike": spk, "spike_gap": gap,
         "train_accuracy": correct / max(n, 1.0), "firing_rate": rate, "report_samples": int(n)}
    if has_val:
        vc, vn = nxt(), nxt()
        m["val_accuracy"] = vc / max(vn, 1.0)
        m["val_samples"] = int(vn)
    m.update(adaptive_metrics(state))  # per-layer penalties, balancing residuals, Anderson counts (when on)
    return m
