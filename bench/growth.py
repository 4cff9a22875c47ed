"""Growth on the shallow network: time per iteration and validation accuracy of deep MNIST networks
with the iterations of the growth phase run on the grown layers only (the default) or on every layer.

    python bench/growth.py --hidden 128 128 128 128 128 128 128 --iterations 12 --out runs/growth

Trains the same network (same data, seed and settings) twice: ``shallow`` (solver.iterate's default,
growth on the network of the grown layers) and ``every`` (``truncate=False``: every layer's states are
updated, frozen or not). --n training and --n-val validation images from the shared training files
(split seed 0), T = --time-steps rate code, one torch thread, no augmentation unless --augment-shift.
Writes growth.json and growth.md into --out.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.train import train

from explore import data_arguments, parse_variant, training_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap, iterations=12)
    ap.add_argument("--set", default="", metavar="SETTING=VALUE,...", help="ADMMSettings changes (JSON values)")
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--modes", nargs="+", default=["shallow", "every"], choices=["shallow", "every"])
    ap.add_argument("--out", default="runs/growth")
    a = ap.parse_args()
    (X, lab), val = training_data(a)
    _, changes = parse_variant("x=" + a.set)
    settings = ADMMSettings(iterations=a.iterations, **changes)
    original = S.iterate
    rows = []
    for mode in a.modes:
        S.iterate = original if mode == "shallow" else functools.partial(original, truncate=False)
        try:
            t0 = time.perf_counter()
            r = train(X, lab, a.hidden, settings, n_classes=10, val=val, progress=False, val_samples=0,
                      budget_s=a.budget_s)
        finally:
            S.iterate = original
        rows.append({"mode": mode, "hidden": a.hidden, "changes": changes,
                     "best_val": max(m["val_accuracy"] for m in r.history), "best_iteration": r.best_iteration,
                     "iterations": len(r.history),
                     "val_per_iteration": [m["val_accuracy"] for m in r.history],
                     "seconds_per_iteration": [round(m.get("seconds", float("nan")), 2) for m in r.history],
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "growth.json").write_text(json.dumps(rows, indent=1))
    lines = [f"{a.n} train / {a.n_val} val MNIST images, T = {a.time_steps}, hidden {a.hidden}, changes {changes}",
             "", "| mode | iterations | best validation | at iteration | seconds |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['iterations']} | {r['best_val']:.4f} | {r['best_iteration']} | {r['seconds']} |"
              for r in rows]
    (out / "growth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
