"""The output loss and the gated weight targets, measured: square loss (one-hot targets, the paper's)
against the hinge output, each without gated targets, and the hinge with gated targets (the defaults),
everything else equal, on real MNIST images and real N-MNIST recordings.

    python bench/learning.py --mnist-dir ../shared/data/mnist --nmnist-dir ../shared/data/nmnist --out runs/learning

MNIST: 5,000 training and 2,000 validation images (stratified from the 22,699 shared images, split seed
0), T = 20 rate code, 784-128-10, 12 iterations. N-MNIST: the 1,000 shared recordings split as by
`admm-snn compare` (599 train / 202 validation / 199 test), T = 30, 2312-128-10, 12 iterations. For each
loss and seed: the best validation accuracy over the iterations and the test accuracy of the weights
that validation chose (N-MNIST; MNIST has no test split here: the official test images are held out).
Writes learning.md and learning.json into --out.
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


def run(splits, hidden, settings):
    val = (splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels)
    t0 = time.perf_counter()
    r = train(splits.train.time_major(dtype=splits.train.frames.dtype), splits.train.labels, hidden, settings,
              n_classes=splits.train.n_classes, val=val, progress=False, val_samples=0)
    out = {"val": max(m["val_accuracy"] for m in r.history), "best_iteration": r.best_iteration,
           "seconds": round(time.perf_counter() - t0, 1)}
    if splits.test is not None and len(splits.test):
        X = splits.test.time_major(dtype=torch.float32)
        out["test"] = float((predict(r.weights, X, settings.lif) == splits.test.labels).float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-dir", default="../shared/data/mnist")
    ap.add_argument("--nmnist-dir", default="../shared/data/nmnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--variants", nargs="+", default=["square:0", "hinge:0", "hinge:5"],
                    metavar="LOSS:GATE", help="output loss and target_gate of each variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/learning")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = {
        "mnist": load_splits(DataOptions(dataset="mnist", data_dir=a.mnist_dir, time_steps=20, limit=7000,
                                         val_fraction=2 / 7, test_fraction=0.0), need_test=False),
        "nmnist": load_splits(DataOptions(dataset="nmnist", data_dir=a.nmnist_dir, time_steps=30)),
    }
    rows = []
    for name, splits in data.items():
        for variant in a.variants:
            loss, gate = variant.split(":")
            for seed in range(a.seeds):
                s = ADMMSettings(iterations=a.iterations, output_loss=loss, target_gate=float(gate), seed=seed)
                r = run(splits, [128], s)
                rows.append({"data": name, "loss": loss, "gate": float(gate), "seed": seed, **r})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(rows, indent=1))
    lines = ["| data | loss | target gate | best validation (mean over seeds) | test (N-MNIST) | per seed (val) |",
             "|---|---|---:|---:|---:|---|"]
    for name in data:
        for variant in a.variants:
            loss, gate = variant.split(":")
            rs = [r for r in rows if r["data"] == name and r["loss"] == loss and r["gate"] == float(gate)]
            val = sum(r["val"] for r in rs) / len(rs)
            test = sum(r["test"] for r in rs) / len(rs) if "test" in rs[0] else None
            test_s = "" if test is None else f"{test:.4f}"
            lines.append(f"| {name} | {loss} | {gate} | {val:.4f} | {test_s} | "
                         + " / ".join(f"{r['val']:.3f}" for r in rs) + " |")
    (out / "learning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
