#!/usr/bin/env python
"""How far a data-parallel run (``--nproc 2``) is from one process, and from one process with another
number of threads: for each seed, the same ``admm-snn train`` command in several variants, then the
relative Frobenius distance of every weight tensor and the training accuracy of each.

Variants (each a fresh run into OUT/seed-S/NAME):

    one        one process, torch's default threads
    one-1t     one process, OMP_NUM_THREADS=1 (the threads each of 2 processes gets on 2 cores)
    two        --nproc 2 (launch_local: OMP_NUM_THREADS = cores // 2 per process)
    one-1t-f64 / two-f64   the same two with --cross-dtype float64

    python bench/parity.py --data-dir /work/shared/data/nmnist --seeds 0 1 2 --out runs/parity

Prints a markdown table: per seed and pair, the largest relative weight distance (max over tensors, in
the model written by each run: the last iterate, as --val-fraction 0 keeps no validation split) and the
two training accuracies as counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from admm_snn.experiments.bench import cpu_model
from admm_snn.io import load_model

VARIANTS = {"one": ([], {}), "one-1t": ([], {"OMP_NUM_THREADS": "1"}), "two": (["--nproc", "2"], {}),
            "one-1t-f64": (["--cross-dtype", "float64"], {"OMP_NUM_THREADS": "1"}),
            "two-f64": (["--cross-dtype", "float64", "--nproc", "2"], {})}
PAIRS = [("one", "two"), ("one", "one-1t"), ("one-1t", "two"), ("one-1t-f64", "two-f64")]


def command(args, seed: int) -> list[str]:
    return [sys.executable, "-m", "admm_snn.cli", "train", "--dataset", "nmnist", "--data-dir", args.data_dir,
            "--hidden", str(args.hidden), "--time-steps", str(args.time_steps), "--bin-ms", "10",
            "--iterations", str(args.iterations), "--warmup", "1", "--val-fraction", "0", "--seed", str(seed),
            "--quiet", *(["--cache-dir", args.cache_dir] if args.cache_dir else [])]


def distance(a: Path, b: Path) -> float:
    wa, wb = load_model(a)["weights"], load_model(b)["weights"]
    return max(float((x.double() - y.double()).norm() / y.double().norm()) for x, y in zip(wa, wb))


def correct(run: Path) -> str:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    summary = json.loads((run / "summary.json").read_text())
    n = summary["split"]["n_train"]
    return f"{round(json.loads(lines[-1])['train_accuracy'] * n)}/{n}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--time-steps", type=int, default=10)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--out", default="runs/parity")
    args = p.parse_args()
    print(f"CPU: {cpu_model()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
          f"cores: {os.cpu_count()}; iterations: {args.iterations}\n", flush=True)
    print("| seed | pair | max relative weight distance | train correct (first, second) |")
    print("|---|---|---|---|")
    for seed in args.seeds:
        base = Path(args.out) / f"seed-{seed}"
        for name, (extra, env) in VARIANTS.items():
            subprocess.run([*command(args, seed), *extra, "--out", str(base / name)], check=True,
                           env=dict(os.environ, **env), stdout=subprocess.DEVNULL)
        for a, b in PAIRS:
            print(f"| {seed} | {a} vs {b} | {distance(base / a, base / b):.2e} "
                  f"| {correct(base / a)}, {correct(base / b)} |", flush=True)


if __name__ == "__main__":
    main()
