"""Settings explored on MNIST: best validation accuracy of ADMM over its iterations for each variant.

    python bench/explore.py --data-dir ../shared/data/mnist --out runs/explore \
        --variant base= --variant step006=weight_step=0.06 --variant ridge1=ridge=1.0

Each ``--variant NAME=SETTING=VALUE[,SETTING=VALUE...]`` (values as JSON; ``NAME=`` alone: the defaults)
trains one network with those ADMMSettings changes on the same data: --n training and --n-val
validation images (stratified from the shared training files, split seed 0; no test images are used),
T = --time-steps rate code, hidden layers --hidden, --iterations iterations, one torch thread. Writes
explore.md and explore.json into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from admm_snn.admm.settings import ADMMSettings
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.train import train


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("=")
    changes = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        changes[key] = json.loads(value)
    return name, changes


def data_arguments(ap: argparse.ArgumentParser, iterations: int) -> None:
    """The data and network options shared by the MNIST probes (this script, bench/redraw.py)."""
    ap.add_argument("--data-dir", default="../shared/data/mnist")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--time-steps", type=int, default=20)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--iterations", type=int, default=iterations)


def mnist_splits(a, encoding: str = "rate"):
    """--n training and --n-val validation images, stratified from the training files (split seed 0)."""
    return load_splits(DataOptions(dataset="mnist", data_dir=a.data_dir, time_steps=a.time_steps,
                                   encoding=encoding, limit=a.n + a.n_val, val_fraction=a.n_val / (a.n + a.n_val),
                                   test_fraction=0.0), need_test=False)


def training_data(a):
    """One torch thread; (frames, labels) of the training split and (frames, labels) of the validation split."""
    torch.set_num_threads(1)
    splits = mnist_splits(a)
    return ((splits.train.time_major(dtype=splits.train.frames.dtype), splits.train.labels),
            (splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap, iterations=12)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SETTING=VALUE,...")
    ap.add_argument("--out", default="runs/explore")
    a = ap.parse_args()
    (X, lab), val = training_data(a)
    rows = []
    for text in a.variant or ["base="]:
        name, changes = parse_variant(text)
        s = ADMMSettings(iterations=a.iterations, **changes)
        t0 = time.perf_counter()
        r = train(X, lab, a.hidden, s, n_classes=10, val=val, progress=False, val_samples=0)
        accs = [m["val_accuracy"] for m in r.history]
        rows.append({"variant": name, "changes": changes, "best_val": max(accs),
                     "best_iteration": r.best_iteration, "val_per_iteration": accs,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explore.json").write_text(json.dumps(rows, indent=1))
    lines = [f"{a.n} train / {a.n_val} val MNIST images, T = {a.time_steps}, hidden {a.hidden}, "
             f"{a.iterations} iterations", "", "| variant | changes | best validation | at iteration |",
             "|---|---|---:|---:|"]
    lines += [f"| {r['variant']} | {r['changes']} | {r['best_val']:.4f} | {r['best_iteration']} |" for r in rows]
    (out / "explore.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
