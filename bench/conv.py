#!/usr/bin/env python
"""A convolutional and a dense ADMM network on the same N-MNIST split (validation accuracy per iteration).

    python bench/conv.py --n 300 --n-val 300 --arch 12c5-p2-32c5-p2-128 --iterations 5

--n training and --n-val validation recordings (stratified from the shared N-MNIST training recordings,
split seed 0), T = --time-steps frames of --bin-ms; the convolutional network --arch is trained with
``conv_train.fit_conv`` (admm/conv_solver.py), the dense 2312-<--hidden>-10 network with ``train.train``,
both with the default ADMMSettings and the changes of ``--set`` (JSON values, as bench/explore.py's
variants), one torch thread. Prints one JSON line per network (validation and
training accuracy per iteration, seconds per iteration).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from admm_snn.admm.settings import ADMMSettings
from admm_snn.conv_train import fit_conv
from admm_snn.data.options import DataOptions, load_splits
from admm_snn.train import train
from explore import parse_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/nmnist")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--time-steps", type=int, default=10)
    ap.add_argument("--bin-ms", type=float, default=30.0)
    ap.add_argument("--arch", default="12c5-p2-32c5-p2-128")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--set", default="", metavar="SETTING=VALUE,...", help="ADMMSettings changes (JSON values)")
    ap.add_argument("--conv-only", action="store_true", help="skip the dense network")
    a = ap.parse_args()
    torch.set_num_threads(1)
    splits = load_splits(DataOptions(dataset="nmnist", data_dir=a.data_dir, time_steps=a.time_steps,
                                     bin_ms=a.bin_ms, limit=a.n + a.n_val,
                                     val_fraction=a.n_val / (a.n + a.n_val), test_fraction=0.0), need_test=False)
    X, lab = splits.train.time_major(dtype=torch.float32), splits.train.labels
    val = (splits.val.time_major(dtype=torch.float32), splits.val.labels)
    settings = ADMMSettings(iterations=a.iterations, **parse_variant("=" + a.set)[1])
    t0 = time.perf_counter()
    r = fit_conv(X, lab, a.arch, (2, 34, 34), settings, n_classes=10, val=val)
    print(json.dumps({"network": a.arch, "val": [h.get("val_accuracy") for h in r.history],
                      "train": [h["train_accuracy"] for h in r.history],
                      "seconds": [round(h.get("seconds", 0.0), 1) for h in r.history],
                      "total_s": round(time.perf_counter() - t0)}), flush=True)
    if a.conv_only:
        return
    t0 = time.perf_counter()
    d = train(X, lab, [a.hidden], settings, n_classes=10, val=val, progress=False, val_samples=0)
    print(json.dumps({"network": f"2312-{a.hidden}-10", "val": [h["val_accuracy"] for h in d.history],
                      "train": [h["train_accuracy"] for h in d.history],
                      "seconds": [round(h["seconds"], 1) for h in d.history],
                      "total_s": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
