"""Ablation of the changes that make ADMM learn: each one switched off in turn, on real N-MNIST.

    python bench/ablation.py --data-dir ../shared/data/nmnist --depths 1 3 5 --iterations 3 --seeds 3 --out runs/ablation

Rows above "paper preset" switch one default off; rows starting with "+" switch one extension (off by
default) on.

Same data and split as `admm-snn compare` (599 train / 202 validation / 199 test recordings, stratified,
split seed 0). Reports the test accuracy of the true forward simulation of the weights chosen on the
validation split (mean ± std over --seeds seeds: seed i uses settings seed i), and writes ablation.md and
ablation.json into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from admm_snn.admm.settings import ADMMSettings
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.network import predict
from admm_snn.train import train

VARIANTS = {
    "all (default)": {},
    "no layer-by-layer growth": {"grow_every": 0},
    "random deep layers (no identity init)": {"deep_init": "random", "grow_every": 0},
    "no re-projection": {"reproject": 0},
    "output block not joint": {"output_solve": "potentials"},
    "clipped spikes": {"spike_solver": "clip"},
    "ridge instead of proximal": {"proximal": False},
    "exact weight block (no step)": {"step_rule": "fixed", "weight_step": 1.0},
    "no rate calibration": {"init_rate": None},
    "dual on": {"dual": True},
    "paper preset": "paper",
    # extensions that are off by default: each switched on alone
    "+ residual balancing of ρ, β": {"penalty_balance": "both"},
    "+ continuation (ρ, β × 1.5 per iteration)": {"rho_growth": 1.5, "beta_growth": 1.5},
    "+ Anderson acceleration (m = 3)": {"anderson": 3},
    "+ L1 on weights (l1 = 0.1)": {"l1": 0.1},
    "+ firing-rate penalty (γ = 1e-5)": {"rate_penalty": 1e-5},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/nmnist")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default="runs/ablation")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sp = load_splits(DataOptions(dataset="nmnist", data_dir=args.data_dir))
    Xtr, Xva, Xte = (d.time_major() for d in (sp.train, sp.val, sp.test))
    rows = []
    for depth in args.depths:
        for name in args.variants:
            change = VARIANTS[name]
            runs = []
            for seed in range(args.seeds):
                if change == "paper":
                    s = ADMMSettings.paper(iterations=args.iterations, seed=seed)
                else:
                    s = ADMMSettings(iterations=args.iterations, seed=seed, **change)
                t0 = time.perf_counter()
                res = train(Xtr, sp.train.labels, [args.width] * depth, s, val=(Xva, sp.val.labels),
                            progress=False, log=lambda *a: None)
                wall = time.perf_counter() - t0
                test = float((predict(res.weights, Xte, s.lif) == sp.test.labels).float().mean())
                val = max(h.get("val_accuracy", 0.0) for h in res.history)
                runs.append({"seed": seed, "test_accuracy": test, "best_val_accuracy": val,
                             "best_iteration": res.best_iteration, "wall_s": wall,
                             "final_train_accuracy": res.history[-1]["train_accuracy"]})
                print(json.dumps({"depth": depth, "variant": name, **runs[-1]}), flush=True)
            row = {"depth": depth, "variant": name, "runs": runs}
            for k in ("test_accuracy", "best_val_accuracy", "wall_s"):
                v = torch.tensor([r[k] for r in runs], dtype=torch.float64)
                row[k] = float(v.mean())
                row[k + "_std"] = float(v.std()) if len(runs) > 1 else 0.0
            rows.append(row)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    lines = [f"Test and best validation accuracy (%), mean ± std over {args.seeds} seed(s), {args.iterations} "
             "iterations, hidden layers of " + str(args.width) + ".", "",
             "| depth | variant | test acc. | best val. acc. | wall s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['depth']} | {r['variant']} | {100 * r['test_accuracy']:.1f} ± {100 * r['test_accuracy_std']:.1f} | "
                     f"{100 * r['best_val_accuracy']:.1f} ± {100 * r['best_val_accuracy_std']:.1f} | {r['wall_s']:.0f} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
