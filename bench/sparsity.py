"""Sparsity for energy: test accuracy against weight density, firing rate and synaptic operations, over a
grid of the L1 penalty (``--l1``, through the split W = V, admm/sparsity.py) and the firing-rate penalty
(``--rate-penalty``), on real N-MNIST.

    python bench/sparsity.py --data-dir ../shared/data/nmnist --l1 0 0.1 0.3 --rate-penalty 0 1e-5 3e-5 \
        --iterations 6 --hidden 128 --out runs/sparsity

Same data and split as ``admm-snn compare`` (599 train / 202 validation / 199 test recordings, stratified,
split seed 0). For every (l1, γ) one ADMM run (default settings otherwise), then on the test split, with
the true forward simulation:

- ``acc_best_W``: the weights chosen on validation (what ``train`` exports: dense W);
- ``acc_W`` and ``acc_V``: the last iterate's W and its exactly sparse copy V (hidden layers replaced by
  V_l; V = W without L1);
- ``density``: fraction of nonzero hidden weights of V (all hidden layers together);
- ``rate``: mean hidden firing rate of the V network; ``sops``: synaptic operations per sample as in
  ``admm_snn.network.synaptic_operations`` (events × fan-out, blind to zero weights); ``nz_sops``: the
  operations that touch a nonzero weight (``sparsity.nonzero_synaptic_ops``), the energy proxy that
  weight sparsity lowers;
- ``acc_pruned``: the baseline — the last W of the run with l1 = 0 and the same γ, each hidden layer
  magnitude-pruned to the density of this run's V (no retraining).

Writes sparsity.md, sparsity.json and sparsity.png (accuracy against density, firing rate, synaptic
operations) into --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from admm_snn.admm import sparsity as SP
from admm_snn.admm.settings import ADMMSettings
from admm_snn.experiments.common import evaluate
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.network import forward
from admm_snn.train import train


def prune_like(weights: list[torch.Tensor], densities: list[float]) -> list[torch.Tensor]:
    """Each hidden layer's weights with all but the largest-magnitude fraction ``density`` set to 0."""
    out = [w.clone() for w in weights]
    for l, d in enumerate(densities):
        w = out[l]
        k = int(round((1.0 - d) * w.numel()))  # entries to zero
        if k > 0:
            idx = w.abs().flatten().argsort()[:k]
            w.view(-1)[idx] = 0
    return out


def measure(weights, X, labels, params) -> dict:
    ev = evaluate(weights, X, labels, params)
    nz = 0.0
    for s in range(0, X.shape[1], 256):
        x = X[:, s:s + 256]
        trace = forward(weights, x, params)
        nz += SP.nonzero_synaptic_ops(weights, x, trace.spikes) * x.shape[1]
    rates = ev["firing_rate"]
    return {"accuracy": ev["accuracy"], "firing_rate": rates, "rate": sum(rates) / max(len(rates), 1),
            "sops": ev["synaptic_ops"], "nz_sops": nz / X.shape[1]}


def hidden_density(weights) -> float:
    hidden = weights[:-1]
    return float(sum(int((w != 0).sum()) for w in hidden) / sum(w.numel() for w in hidden))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    gammas = sorted({r["rate_penalty"] for r in rows})
    markers = "os^Dvp*hX"
    l1s = sorted({r["l1"] for r in rows})
    cmap = plt.get_cmap("viridis")
    for gi, g in enumerate(gammas):
        color = cmap(gi / max(1, len(gammas) - 1))
        sub = sorted((r for r in rows if r["rate_penalty"] == g), key=lambda r: r["l1"])
        for ax, key in zip(axes, ("density", "rate", "nz_sops")):
            ax.plot([r[key] for r in sub], [r["acc_V"] for r in sub], "-", color=color, alpha=0.5)
            for r in sub:
                ax.plot(r[key], r["acc_V"], markers[l1s.index(r["l1"]) % len(markers)], color=color,
                        label=f"γ={g:g}, l1={r['l1']:g}")
    pr = sorted((r for r in rows if r["l1"] > 0), key=lambda r: r["density"])
    if pr:
        for ax, key in zip(axes, ("density", "pruned_rate", "pruned_nz_sops")):
            ax.plot([r[key] for r in pr], [r["acc_pruned"] for r in pr], "x", color="red",
                    label="l1=0 run (same γ) magnitude-pruned to V's density")
    axes[0].set_xlabel("weight density of V (hidden layers)")
    axes[1].set_xlabel("mean hidden firing rate (spikes per neuron per step)")
    axes[2].set_xlabel("synaptic operations per sample on nonzero weights")
    for ax in axes:
        ax.set_ylabel("test accuracy (V network, last iterate)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle("N-MNIST, accuracy against sparsity: L1 split (l1) and firing-rate penalty (γ)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/nmnist")
    ap.add_argument("--cache-dir", default=None, help="cache of the framed recordings (optional)")
    ap.add_argument("--l1", type=float, nargs="+", default=[0.0, 0.1, 0.3],
                    help="l1 values (0 is always added: the baseline of each γ)")
    ap.add_argument("--l1-penalty", type=float, default=ADMMSettings().l1_penalty)
    ap.add_argument("--l1-output", action="store_true", help="put the output layer under the split too")
    ap.add_argument("--rate-penalty", type=float, nargs="+", default=[0.0, 1e-5, 3e-5])
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/sparsity")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sp = load_splits(DataOptions(dataset="nmnist", data_dir=args.data_dir, cache_dir=args.cache_dir))
    Xtr, Xva, Xte = (d.time_major(torch.uint8) for d in (sp.train, sp.val, sp.test))
    print(f"data: {sp.info['n_train']} train, {sp.info['n_val']} val, {sp.info['n_test']} test; "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    l1s = sorted(set([0.0, *args.l1]))
    rows, dense = [], {}
    for g in args.rate_penalty:
        for l1 in l1s:
            s = ADMMSettings(iterations=args.iterations, seed=args.seed, l1=l1, l1_penalty=args.l1_penalty,
                             l1_output=args.l1_output, rate_penalty=g)
            t = time.perf_counter()
            res = train(Xtr, sp.train.labels, list(args.hidden), s, val=(Xva, sp.val.labels), progress=False,
                        log=lambda *a: None)
            wall = time.perf_counter() - t
            W = res.final_weights
            V = SP.sparse_weights(res.state)
            if l1 == 0.0:
                dense[g] = W
            mV = measure(V, Xte, sp.test.labels, s.lif)
            densities = SP.density(V[:-1])
            pruned = measure(prune_like(dense[g], densities), Xte, sp.test.labels, s.lif)
            row = {"l1": l1, "rate_penalty": g, "l1_penalty": args.l1_penalty,
                   "acc_best_W": evaluate(res.weights, Xte, sp.test.labels, s.lif)["accuracy"],
                   "best_iteration": res.best_iteration,
                   "best_val": max(h["val_accuracy"] for h in res.history),
                   "acc_W": evaluate(W, Xte, sp.test.labels, s.lif)["accuracy"], "acc_V": mV["accuracy"],
                   "density": hidden_density(V), "density_per_layer": SP.density(V),
                   "rate": mV["rate"], "firing_rate": mV["firing_rate"], "sops": mV["sops"],
                   "nz_sops": mV["nz_sops"], "acc_pruned": pruned["accuracy"], "pruned_nz_sops": pruned["nz_sops"],
                   "pruned_rate": pruned["rate"],
                   "gap_W_V": float(sum((w - v).norm() ** 2 for w, v in zip(W[:-1], V[:-1])) ** 0.5
                                    / sum(w.norm() ** 2 for w in W[:-1]) ** 0.5),
                   "wall_s": wall}
            rows.append(row)
            print(f"γ={g:g} l1={l1:g}: test best-W {row['acc_best_W']:.3f} W {row['acc_W']:.3f} V {row['acc_V']:.3f} "
                  f"(pruned l1=0 run {row['acc_pruned']:.3f}) density {row['density']:.3f} rate {row['rate']:.4f} "
                  f"nz-SOPs {row['nz_sops']:.0f} ({wall:.0f} s)", flush=True)
            result = {"args": vars(args), "split": sp.info, "settings": s.replace(l1=0.0, rate_penalty=0.0).to_dict(),
                      "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                      "threads": args.threads},
                      "rows": rows, "total_s": time.perf_counter() - t0}
            (out / "sparsity.json").write_text(json.dumps(result, indent=2))
    lines = [f"N-MNIST, hidden {args.hidden}, {args.iterations} iterations, l1_penalty {args.l1_penalty:g}"
             f"{', output layer under the split' if args.l1_output else ''}; test accuracy of the forward "
             f"simulation ({sp.info['n_test']} test recordings).", "",
             "| γ (rate) | l1 | acc. best W | acc. W | acc. V | acc. l1=0 pruned to V's density | density of V "
             "| firing rate | SOPs/sample | nonzero SOPs/sample | ‖W−V‖/‖W‖ | wall s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rate_penalty']:g} | {r['l1']:g} | {r['acc_best_W']:.3f} | {r['acc_W']:.3f} | "
                     f"{r['acc_V']:.3f} | {r['acc_pruned']:.3f} | {r['density']:.3f} | {r['rate']:.4f} | "
                     f"{r['sops']:.0f} | {r['nz_sops']:.0f} | {r['gap_W_V']:.3f} | {r['wall_s']:.0f} |")
    (out / "sparsity.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "sparsity.png")
    print("\n".join(lines))
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {out / 'sparsity.md'}, sparsity.json, sparsity.png")


if __name__ == "__main__":
    main()
