"""How close a data-parallel convolutional run (admm-snn train --arch --nproc 2) is to the one-process run.

Runs ``admm-snn train --arch SPEC`` on N-MNIST in one process (one thread), in 2 processes (one thread
each) and, with --threads, in one process on 2 threads, with the default float32 cross products and with
``--cross-dtype float64``; prints a markdown table: per-layer relative distance of the final weights to
the one-process run's, the largest difference of the per-iteration training accuracy (in samples), the
test accuracies and the seconds per iteration (mean of iterations 1..K, the slowest process's)::

    python bench/conv_parallel.py --data-dir ../shared/data/nmnist --out runs/conv-parallel

Each run writes its folder under --out (model.safetensors, metrics.jsonl, summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def run(out: Path, base: list[str], nproc: int, threads: int, cross: str | None) -> Path:
    """One ``admm-snn train`` run into ``out`` (skipped when its summary is already there)."""
    if not (out / "summary.json").is_file():
        cmd = [sys.executable, "-m", "admm_snn.cli", "train", *base, "--out", str(out), "--quiet"]
        cmd += ["--nproc", str(nproc)] if nproc > 1 else []
        cmd += ["--cross-dtype", cross] if cross else []
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return out


def compare(run_dir: Path, ref_dir: Path) -> dict:
    """Relative weight distances ‖W − W_ref‖/‖W_ref‖ per layer, the largest training-accuracy difference in
    samples over the iterations, the test accuracy and the mean seconds per iteration of ``run_dir``."""
    from admm_snn.io import load_model
    W, R = load_model(run_dir)["weights"], load_model(ref_dir)["weights"]
    hist = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    n = json.loads((run_dir / "summary.json").read_text())["split"]["n_train"]
    return {"rel": [float((w.double() - r.double()).norm() / r.double().norm()) for w, r in zip(W, R)],
            "equal": all(w.equal(r) for w, r in zip(W, R)),
            "acc_samples": max(round(abs(a["train_accuracy"] - b["train_accuracy"]) * n) for a, b in zip(hist, ref)),
            "test": json.loads((run_dir / "summary.json").read_text())["test_accuracy"],
            "s_per_it": sum(m["seconds"] for m in hist[1:]) / max(len(hist) - 1, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/nmnist")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--arch", default="8c5-p4-64")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--time-steps", type=int, default=10)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--threads", action="store_true", help="also one process on 2 threads")
    p.add_argument("--out", default="runs/conv-parallel")
    args = p.parse_args()
    base = ["--dataset", "nmnist", "--data-dir", args.data_dir, "--limit", str(args.limit), "--time-steps",
            str(args.time_steps), "--arch", args.arch, "--iterations", str(args.iterations), "--val-fraction", "0"]
    base += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    out = Path(args.out)
    print("| cross products | run | weights apart (per layer) | train accuracy, most samples apart | test | s/it |")
    print("|---|---|---|---|---|---|")
    for cross in (None, "float64"):
        tag = cross or "float32"
        ref = run(out / f"{tag}-1proc", base, 1, 1, cross)
        rows = [("1 process, 1 thread", ref), ("2 processes", run(out / f"{tag}-2proc", base, 2, 1, cross))]
        if args.threads:
            rows.append(("1 process, 2 threads", run(out / f"{tag}-2threads", base, 1, 2, cross)))
        for name, folder in rows:
            c = compare(folder, ref)
            apart = "bit for bit" if c["equal"] else " / ".join(f"{100 * r:.1f}%" for r in c["rel"])
            print(f"| {tag} | {name} | {apart} | {c['acc_samples']} | "
                  f"{c['test']:.3f} | {c['s_per_it']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
