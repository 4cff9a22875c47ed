"""Adaptive penalties (residual balancing), continuation and Anderson acceleration, each on and off, on
real N-MNIST.

    python bench/adaptive.py --data-dir ../shared/data/nmnist --depths 1 3 --iterations 8 --seeds 0 1 \\
        --out runs/adaptive

Same data and split as `admm-snn compare` (599 train / 202 validation / 199 test recordings, stratified,
split seed 0). For every depth: the default settings with each feature switched on in turn; for the
depths in --paper-depths also the paper preset (ADMMSettings.paper, its own sequential schedule) with each
feature. Reports the test accuracy of the forward simulation of the weights chosen on validation
(compare.evaluate), the best validation accuracy, the spike gap (fraction of hidden spikes where round(a)
differs from the forward simulation, mean over hidden layers, at the last iteration; zero by construction
when the states are re-projected every iteration) and the training seconds. Writes adaptive.md,
adaptive.json and the per-run histories into --out. Every run uses one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from admm_snn.admm.settings import ADMMSettings
from admm_snn.experiments.common import evaluate
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.train import train

FEATURES = {
    "off": {},
    "balance": {"penalty_balance": "both"},
    "continuation": {"rho_growth": 1.5, "beta_growth": 1.5},
    "anderson": {"anderson": 3},
}


def _settings(preset: str, iterations: int, seed: int, change: dict) -> ADMMSettings:
    if preset == "paper":
        return ADMMSettings.paper(iterations=iterations, seed=seed, **change)
    return ADMMSettings(iterations=iterations, seed=seed, **change)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/nmnist")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--paper-depths", type=int, nargs="*", default=[1])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--paper-iterations", type=int, default=None,
                    help="iterations of the paper-preset runs (default: --iterations; the plain method needs "
                         "tens of iterations to leave chance level)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--paper-seeds", type=int, nargs="*", default=None, help="seeds of the paper-preset runs "
                    "(default: --seeds)")
    ap.add_argument("--features", nargs="+", default=list(FEATURES), choices=list(FEATURES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/adaptive")
    ap.add_argument("--append", action="store_true", help="add to the runs already in --out/adaptive.json")
    ap.add_argument("--tables-only", action="store_true", help="rewrite adaptive.md from --out/adaptive.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tables_only:
        write_tables(json.loads((out / "adaptive.json").read_text()), out)
        return
    sp = load_splits(DataOptions(dataset="nmnist", data_dir=args.data_dir))
    X = sp.train.time_major(torch.uint8)
    val = (sp.val.time_major(torch.uint8), sp.val.labels)
    test_frames, test_labels = sp.test.time_major(), sp.test.labels
    code = _code_version()
    jobs = [("default", d) for d in args.depths] + [("paper", d) for d in args.paper_depths]
    rows = json.loads((out / "adaptive.json").read_text()) if args.append and (out / "adaptive.json").exists() else []
    for preset, depth in jobs:
        for feature in args.features:
            for seed in (args.paper_seeds if preset == "paper" and args.paper_seeds is not None else args.seeds):
                iterations = (args.paper_iterations or args.iterations) if preset == "paper" else args.iterations
                s = _settings(preset, iterations, seed, FEATURES[feature])
                t0 = time.perf_counter()
                res = train(X, sp.train.labels, [args.width] * depth, s, n_classes=10, val=val, progress=False,
                            log=lambda *a: None)
                wall = time.perf_counter() - t0
                test = evaluate(res.weights, test_frames, test_labels, s.lif)["accuracy"]
                last = res.history[-1]
                row = {"preset": preset, "depth": depth, "feature": feature, "seed": seed, "iterations": iterations,
                       "test_accuracy": test,
                       "best_val_accuracy": max(h.get("val_accuracy", 0.0) for h in res.history),
                       "best_iteration": res.best_iteration,
                       "spike_gap": statistics.mean(last["spike_gap"]) if last["spike_gap"] else 0.0,
                       "train_accuracy": last["train_accuracy"], "wall_s": wall,
                       "rho_layers": last.get("rho_layers"), "beta_layers": last.get("beta_layers"),
                       "anderson": [last.get("anderson_accepted"), last.get("anderson_rejected")],
                       "settings": s.to_dict(), "code": code,
                       "history": res.history}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
                (out / "adaptive.json").write_text(json.dumps(rows, indent=1))
    write_tables(rows, out)


def _code_version() -> str:
    """The commit the runs used, with "+dirty" when the source tree had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_tables(rows, out: Path) -> None:
    lines = ["| preset | depth | feature | seed | iterations | test acc. | best val. acc. | best it. | spike gap | "
             "train acc. | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['depth']} | {r['feature']} | {r['seed']} | {r['iterations']} | "
                     f"{r['test_accuracy']:.3f} | "
                     f"{r['best_val_accuracy']:.3f} | {r['best_iteration']} | {r['spike_gap']:.3f} | "
                     f"{r['train_accuracy']:.3f} | {r['wall_s']:.0f} |")
    lines += ["", "Mean ± standard deviation over seeds:", "",
              "| preset | depth | feature | seeds | test acc. | Δ test vs off (same seeds) | best val. acc. | "
              "Δ val vs off | spike gap | s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["preset"], r["depth"], r["feature"]), []).append(r)
    for (preset, depth, feature), rs in groups.items():
        def m(k, digits=3):
            v = [x[k] for x in rs]
            sd = f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else ""
            return f"{statistics.mean(v):.{digits}f}{sd}"
        base = {x["seed"]: x for x in groups.get((preset, depth, "off"), [])}

        def paired(k):  # the feature minus off, seed by seed (the seed fixes the start and the orders)
            d = [x[k] - base[x["seed"]][k] for x in rs if x["seed"] in base]
            if feature == "off" or not d:
                return "—"
            sd = f" ± {statistics.stdev(d):.3f}" if len(d) > 1 else ""
            return f"{statistics.mean(d):+.3f}{sd}"
        lines.append(f"| {preset} | {depth} | {feature} | {len(rs)} | {m('test_accuracy')} | "
                     f"{paired('test_accuracy')} | "
                     f"{m('best_val_accuracy')} | {paired('best_val_accuracy')} | {m('spike_gap')} | "
                     f"{statistics.mean(x['wall_s'] for x in rs):.0f} |")
    gaps = {k: rs for k, rs in groups.items() if any(x["spike_gap"] > 0 for x in rs)}
    if gaps:
        its = sorted({i for rs in gaps.values() for x in rs for i in (1, 2, 4, 6, 8, 10, 15, 20, 30)
                      if i <= len(x["history"])})
        lines += ["", "Spike gap by iteration (mean over seeds and hidden layers; groups where it is not zero):", "",
                  "| preset | depth | feature | " + " | ".join(f"it. {i}" for i in its) + " |",
                  "|---|---|---|" + "---|" * len(its)]
        for (preset, depth, feature), rs in gaps.items():
            cells = [statistics.mean(statistics.mean(x["history"][i - 1]["spike_gap"]) for x in rs) for i in its]
            lines.append(f"| {preset} | {depth} | {feature} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    (out / "adaptive.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
