#!/usr/bin/env python
"""BPTT learning-rate check on a validation split: the best validation accuracy of the snnTorch BPTT
baseline per Adam learning rate, on the data options of ``admm-snn train`` (same splits and codes).

    python bench/bptt_lr.py --dataset mnist --data-dir ../shared/data/mnist --limit 5000 --time-steps 20 \\
        --lrs 1e-3 2e-3 5e-3 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from admm_snn.baselines.bptt import BPTTSettings, train_bptt
from admm_snn.data import DataOptions, load_splits
from admm_snn.network import LIFParams


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--limit", type=int, default=5000)
    p.add_argument("--time-steps", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[128])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 5e-3])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=BPTTSettings().batch_size)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = load_splits(DataOptions(dataset=args.dataset, data_dir=args.data_dir, limit=args.limit,
                                time_steps=args.time_steps, cache_dir=args.cache_dir), need_test=False)
    X, V = s.train.time_major(dtype=s.train.frames.dtype), s.val.time_major(dtype=s.val.frames.dtype)
    print(f"{s.info['n_train']} train / {s.info['n_val']} validation, hidden {args.hidden}", flush=True)
    for lr in args.lrs:
        t0 = time.perf_counter()
        r = train_bptt(X, s.train.labels, args.hidden, LIFParams(),
                       BPTTSettings(epochs=args.epochs, lr=lr, batch_size=args.batch_size), V, s.val.labels)
        curve = [round(h["val_acc"], 3) for h in r.history]
        print(json.dumps({"lr": lr, "best_val": max(curve), "best_epoch": r.best_epoch, "val_per_epoch": curve,
                          "train_s": round(r.history[-1]["wall_s"], 1), "call_s": round(time.perf_counter() - t0, 1)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
