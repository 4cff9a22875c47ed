#!/usr/bin/env python
"""Weight norms, firing rates and validation accuracy per iteration, with two weight decays that are not
library settings (measured here, not adopted; docs/results.md, known limitations).

    python bench/weight_decay.py --hidden 128 128 128 --iterations 28 --variant base= \
        --variant decoupled=0.02 --variant block=0.001

MNIST: --n training and --n-val validation images (as bench/explore.py), T = 20 rate code, the default
shift augmentation (16 groups, ±1 pixel, seed 0), default ADMMSettings, one torch thread. Variants:

- ``base``: the library as it is;
- ``decoupled=c``: after each weight step, every trained hidden layer W ← (1 − c) W;
- ``block=ν``: an L2 term (ρ ν μ / 2)‖W‖² in the proximal hidden weight block (μ its ridge), i.e.
  W* = (C + μ W_prev)(G + μ(1 + ν) I)⁻¹, still the exact minimiser of that block.

Prints one JSON line per variant: validation accuracy, hidden firing rates and the Frobenius norm of
every weight matrix after each iteration.
"""

from __future__ import annotations

import argparse
import json

import torch

import admm_snn.admm.solver as S
import admm_snn.admm.updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.data.augment import ShiftResampler
from admm_snn.train import train
from explore import data_arguments, mnist_splits


def run(splits, hidden, iterations, kind: str, value: float) -> dict:
    take_step, solve, iterate = S.take_weight_step, U.solve_weights, S.iterate
    norms = []

    def decayed_step(state, previous, settings):
        take_step(state, previous, settings)
        for l in range(len(previous)):
            if not S.frozen(state, settings, l):
                state.weights[l] = state.weights[l] * (1 - value)

    def block_decay(G, C, ridge, factor=None, anchor=None, mu=None):
        if anchor is None:  # the output block and ridge (non-proximal) solves stay as they are
            return solve(G, C, ridge, factor, anchor, mu)
        mu = U.ridge_tensor(G, ridge) if mu is None else mu
        return solve(G, C, ridge, factor, anchor / (1 + value), mu * (1 + value))

    def recording(state, *args, **kwargs):
        iterate(state, *args, **kwargs)
        norms.append([round(float(w.norm()), 3) for w in state.weights])

    try:
        if kind == "decoupled":
            S.take_weight_step = decayed_step
        elif kind == "block":
            U.solve_weights = block_decay
        S.iterate = recording
        X = splits.train.time_major(dtype=splits.train.frames.dtype)
        val = (splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels)
        r = train(X, splits.train.labels, hidden, ADMMSettings(iterations=iterations), n_classes=10, val=val,
                  progress=False, val_samples=0, resample=ShiftResampler(X, splits.train.sensor_shape, 1, 0))
    finally:
        S.take_weight_step, U.solve_weights, S.iterate = take_step, solve, iterate
    return {"val": [round(m["val_accuracy"], 4) for m in r.history],
            "firing_rate": [[round(x, 3) for x in m["firing_rate"]] for m in r.history], "norms": norms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap, iterations=28)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[=VALUE]",
                    help="base, decoupled=c or block=nu (repeatable)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    splits = mnist_splits(a)
    for text in a.variant or ["base"]:
        kind, _, value = text.partition("=")
        if kind not in ("base", "decoupled", "block"):
            raise SystemExit(f"unknown variant {text!r}: use base, decoupled=c or block=nu")
        r = run(splits, a.hidden, a.iterations, kind, float(value or 0.0))
        print(json.dumps({"variant": text, "hidden": a.hidden, **r}), flush=True)


if __name__ == "__main__":
    main()
