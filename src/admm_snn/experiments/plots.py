"""PNG figures of the comparison and the sweep, and spike/potential plots of one sample.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``), so no GUI backend and no
global pyplot state are involved. matplotlib is an optional dependency (``pip install admm-snn[plots]``):
without it every function prints a notice and returns None, and the JSON/markdown results are unaffected.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..network import LIFParams, forward

COLORS = {"admm": "tab:blue", "bptt": "tab:orange", "floor": "tab:gray", "paper": "tab:red"}
LABELS = {"admm": "ADMM", "bptt": "BPTT (snnTorch)", "floor": "random hidden + LS readout",
          "paper": "paper ADMM (full N-MNIST)"}


def _figure(*args, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("admm-snn: matplotlib is not installed, so no plots are drawn (pip install matplotlib)",
              file=sys.stderr)
        return None
    return Figure(*args, **kwargs)


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _mean_curve(curves: list[list]) -> tuple[list[float], list[float]]:
    """Pointwise mean of [(t, acc), ...] curves of equal length (truncated to the shortest)."""
    curves = [c for c in curves if c]
    if not curves:
        return [], []
    n = min(len(c) for c in curves)
    ts = [sum(c[i][0] for c in curves) / len(curves) for i in range(n)]
    accs = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
    return ts, accs


def accuracy_vs_depth(results: dict, path) -> Path | None:
    """Test accuracy (mean ± std over seeds) against the number of hidden layers, with the paper's."""
    fig = _figure(figsize=(5.5, 4))
    if fig is None:
        return None
    ax = fig.add_subplot()
    depths = results["config"]["depths"]
    for m in results["config"]["methods"]:
        rows = [r for r in results["summary"] if r["method"] == m and r["test_accuracy"] and not r.get("arch")]
        if not rows:
            continue
        ax.errorbar([r["depth"] for r in rows], [100 * r["test_accuracy"]["mean"] for r in rows],
                    yerr=[100 * r["test_accuracy"]["std"] for r in rows], marker="o", capsize=3,
                    color=COLORS[m], label=LABELS[m])
    paper = {int(k): v for k, v in (results.get("paper") or {}).items()}
    pd = [d for d in depths if d in paper]
    if pd:
        ax.plot(pd, [100 * paper[d] for d in pd], marker="s", linestyle="--", color=COLORS["paper"],
                label=LABELS["paper"])
    ax.set_xticks(depths)
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy vs depth ({results['config']['data']['dataset']}, {results['split']['n_train']} "
                 "training samples)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_time(results: dict, path) -> Path | None:
    """Validation accuracy against training time, one panel per depth (then per conv architecture), one
    curve per method (mean over seeds); the floor is a single point (its fitting time)."""
    depths = [*results["config"]["depths"], *(results["config"].get("archs") or [])]
    fig = _figure(figsize=(4 * len(depths), 3.6))
    if fig is None:
        return None
    axes = fig.subplots(1, len(depths), squeeze=False)[0]
    for ax, d in zip(axes, depths):
        for m in results["config"]["methods"]:
            runs = [r for r in results["runs"] if r["method"] == m and (r.get("arch") or r["depth"]) == d]
            ts, accs = _mean_curve([r["curve"] for r in runs])
            if not ts:
                continue
            style = {"marker": "o", "markersize": 3} if len(ts) > 1 else {"marker": "D", "markersize": 6}
            ax.plot(ts, [100 * a for a in accs], color=COLORS[m], label=LABELS[m], **style)
        ax.set_title(f"conv {d}" if isinstance(d, str) else f"{d} hidden layer{'s' if d > 1 else ''}", fontsize=10)
        ax.set_xlabel("training time (s)")
        budget = results["config"].get("budget_s")
        if budget:
            ax.axvline(budget, color="k", linestyle=":", linewidth=1, label="budget" if d == depths[0] else None)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def _layer_mean(v):
    if isinstance(v, (list, tuple)):
        v = [x for x in v if x is not None]
        return sum(v) / len(v) if v else float("nan")
    return v


def admm_convergence(results: dict, path) -> Path | None:
    """ADMM loss, Lagrangian, residuals, spike gap and validation accuracy per iteration, one line per
    depth (mean over seeds; per-layer quantities averaged over layers)."""
    keys = [("loss", "loss per sample", True), ("lagrangian", "Lagrangian", True),
            ("residual_output", "output residual (RMS)", True),
            ("residual_dynamics", "dynamics residual (RMS, mean over layers)", True),
            ("residual_spike", "spike residual (RMS, mean over hidden layers)", True),
            ("spike_gap", "spike gap: forward ≠ round(a)", False),
            ("val_accuracy", "validation accuracy", False)]
    fig = _figure(figsize=(14, 6.5))
    if fig is None:
        return None
    axes = fig.subplots(2, 4).ravel()
    cmap = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for j, d in enumerate(results["config"]["depths"]):
        runs = [r for r in results["runs"] if r["method"] == "admm" and r["depth"] == d and r.get("history")]
        if not runs:
            continue
        n = min(len(r["history"]) for r in runs)
        its = [runs[0]["history"][i]["iteration"] for i in range(n)]
        for ax, (k, title, log) in zip(axes, keys):
            ys = []
            for i in range(n):
                vals = [_layer_mean(r["history"][i].get(k)) for r in runs]
                vals = [v for v in vals if v is not None]
                ys.append(sum(vals) / len(vals) if vals else float("nan"))
            ax.plot(its, ys, marker=".", color=cmap[j % len(cmap)], label=f"{d} hidden")
            ax.set_title(title, fontsize=9)
            if log and all(y > 0 for y in ys if y == y):
                ax.set_yscale("log")
    for ax in axes[:len(keys)]:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[-1].axis("off")
    return _save(fig, path)


def sample_activity(weights, frames: torch.Tensor, label: int, params: LIFParams, path, title: str = "",
                    n_neurons: int = 4) -> Path | None:
    """For one sample (``frames``: (T, n_inputs)): spike raster of every hidden layer, membrane potentials
    of a few neurons of the first hidden layer with the threshold θ, and the output potentials over time."""
    fig = _figure(figsize=(9, 9))
    if fig is None:
        return None
    weights = [w.detach().cpu().float() for w in weights]
    with torch.no_grad():
        trace = forward(weights, frames.detach().cpu().float()[:, None, :], params)
    T = frames.shape[0]
    t = torch.arange(1, T + 1).tolist()
    ax1, ax2, ax3 = fig.subplots(3, 1)
    # 1. raster, hidden layers stacked
    offset = 0
    layer_colors = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive"]
    for l, a in enumerate(trace.spikes):
        tt, nn_ = torch.nonzero(a[:, 0] > 0, as_tuple=True)
        ax1.scatter((tt + 1).tolist(), (nn_ + offset).tolist(), s=10, marker="|",
                    color=layer_colors[l % len(layer_colors)], label=f"hidden {l + 1}")
        offset += a.shape[2]
        if l < len(trace.spikes) - 1:
            ax1.axhline(offset - 0.5, color="k", linewidth=0.5)
    ax1.set_xlim(0.5, T + 0.5)
    ax1.set_ylim(-0.5, max(offset, 1) - 0.5)
    ax1.set_ylabel("neuron")
    rate = [float(a.mean()) for a in trace.spikes]
    ax1.set_title((title + "\n" if title else "") + "hidden spike raster (firing rate per layer "
                  + ", ".join(f"{r:.3f}" for r in rate) + ")", fontsize=9)
    if len(trace.spikes) > 1:
        ax1.legend(fontsize=7, loc="upper right", markerscale=3)
    # 2. potentials of the most active neurons of hidden layer 1
    if trace.spikes:
        z, a = trace.potentials[0][:, 0], trace.spikes[0][:, 0]
        counts = a.sum(0)
        order = torch.argsort(counts, descending=True, stable=True)
        chosen = order[:max(n_neurons - 1, 1)].tolist()
        silent = [i for i in order.tolist() if counts[i] == 0]
        if silent and n_neurons > 1:
            chosen.append(silent[0])
        for i in chosen:
            line, = ax2.plot(t, z[:, i].tolist(), linewidth=1, label=f"neuron {i} ({int(counts[i])} spikes)")
            st = torch.nonzero(a[:, i] > 0).flatten()
            ax2.plot((st + 1).tolist(), z[st, i].tolist(), "o", markersize=3, color=line.get_color())
        ax2.axhline(params.theta, color="k", linestyle="--", linewidth=1, label=f"θ = {params.theta:g}")
        ax2.set_ylabel("potential z")
        ax2.set_title("hidden layer 1: membrane potentials (dots: spikes; soft reset subtracts θ next step)",
                      fontsize=9)
        ax2.legend(fontsize=7, loc="upper left")
    else:
        ax2.axis("off")
    # 3. output potentials
    out = trace.output[:, 0]
    pred = int(out[-1].argmax())
    for k in range(out.shape[1]):
        bold = k == label
        ax3.plot(t, out[:, k].tolist(), linewidth=2.2 if bold else 0.8, alpha=1.0 if bold else 0.7,
                 label=f"{k}" + (" (true)" if bold else "") + (" (pred)" if k == pred else ""))
    ax3.set_xlabel("time step")
    ax3.set_ylabel("output potential")
    ax3.set_title(f"output potentials; prediction = argmax at t = T: {pred}, label {label}", fontsize=9)
    ax3.legend(fontsize=7, ncol=2, loc="upper left")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.25)
    return _save(fig, path)


def sweep_heatmap(results: dict, path) -> Path | None:
    """Validation accuracy over the ρ × β grid, one panel per value of the optional extra setting."""
    pname = results["param"]["name"] if results["param"] else None
    pvalues = results["param"]["values"] if results["param"] else [None]
    rhos, betas = results["rho"], results["beta"]
    fig = _figure(figsize=(1.5 + (0.9 * len(rhos) + 1.6) * len(pvalues), 1.6 + 0.6 * len(betas)),
                  layout="constrained")
    if fig is None:
        return None
    axes = fig.subplots(1, len(pvalues), squeeze=False)[0]
    grids = []
    for pv in pvalues:
        grid = []
        for b in betas:
            row = []
            for r in rhos:
                p = next(p for p in results["points"] if p["rho"] == r and p["beta"] == b
                         and (pname is None or p[pname] == pv))
                row.append(float("nan") if p["val_accuracy"] is None else 100 * p["val_accuracy"])
            grid.append(row)
        grids.append(grid)
    finite = [v for g in grids for row in g for v in row if v == v]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 100.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    for ax, pv, grid in zip(axes, pvalues, grids):
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto", vmin=lo, vmax=hi)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "div." if v != v else f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="w" if (v != v or v < (lo + hi) / 2) else "k")
        ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos])
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_xlabel("ρ")
        ax.set_ylabel("β")
        ax.set_title("val. accuracy (%)" + (f", {pname} = {pv}" if pname else ""), fontsize=9)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="validation accuracy (%)")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
