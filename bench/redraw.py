#!/usr/bin/env python
"""Fresh rate-code draws of the training images every iteration: does new input noise regularise ADMM?

    python bench/redraw.py --n 16000 --n-val 6000 --hidden 512 --iterations 15

Same data and split as bench/explore.py (--n training and --n-val validation images stratified from the
shared MNIST training files, split seed 0, T = --time-steps rate code, one torch thread). Before each
re-projection (inside the iteration, after the hidden sweep and the weight step), the training frames are
replaced by a new Bernoulli draw of the same images' intensities (seeded), and the input layer's Gram,
its factor and the frames' sparse form are rebuilt from the new draw, so every block stays the exact
minimiser for the frames it sees; the re-projection then puts the states on the new frames and the
output block fits them. Validation frames are the fixed ones of the data pipeline. ``--every k`` redraws
at every k-th iteration only; ``--mode none`` runs the same script without redraws (the baseline).
``--mode augment --groups K`` is the library's own shift augmentation (``train(resample=ShiftResampler(
..., groups=K))``, no wrapping; K = 0: one offset per sample and the Gram formed from every draw).
Prints one JSON line: best validation, its iteration, validation and training accuracy and seconds per
iteration. This is a research probe (it wraps ``solver.reproject``), not a library feature.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.data.augment import shift_frames
from admm_snn.train import train
from explore import data_arguments, mnist_splits  # bench/explore.py, beside this script


def shifted(intensity: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Every 28x28 image moved by its own random offset in [-s, s]^2, zero fill (library shift_frames)."""
    off = torch.randint(0, 2 * max_shift + 1, (intensity.shape[0], 2), generator=gen)
    return shift_frames(intensity[None], max_shift - off, (1, 28, 28), max_shift)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(ap, iterations=20)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--mode", choices=["redraw", "shift", "shift-frames", "none", "augment"], default="redraw")
    ap.add_argument("--groups", type=int, default=16, help="--mode augment: ShiftResampler's groups")
    ap.add_argument("--max-shift", type=int, default=1, help="--mode shift: each draw moves every image by a "
                    "random whole-pixel offset in [-s, s]^2 (zero fill) before the Bernoulli draw")
    ap.add_argument("--seed", type=int, default=123, help="seed of the fresh draws")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rate = mnist_splits(a)
    X, lab = rate.train.time_major(dtype=rate.train.frames.dtype), rate.train.labels
    val = (rate.val.time_major(dtype=rate.val.frames.dtype), rate.val.labels)
    current = mnist_splits(a, encoding="current")  # the same split
    assert torch.equal(current.train.labels, lab)
    intensity = current.train.frames[:, 0, :].float()  # (N, inputs) firing probabilities
    del current
    gen = torch.Generator().manual_seed(a.seed)
    reproject, calls = S.reproject, [0]
    original = X.clone()

    def redraw_then_reproject(state, frames, settings, cache=None):
        calls[0] += 1
        if a.mode != "none" and calls[0] % a.every == 0:
            T, N, n = frames.shape
            if a.mode == "shift-frames":  # the fixed first draw, moved (no new Bernoulli draw)
                off = torch.randint(0, 2 * a.max_shift + 1, (N, 2), generator=gen)
                frames.copy_(shift_frames(original, a.max_shift - off, (1, 28, 28), a.max_shift))
                source = None
            else:
                source = shifted(intensity, a.max_shift, gen) if a.mode == "shift" else intensity
            for s in range(0, N if source is not None else 0, 2000):
                e = min(N, s + 2000)
                frames[:, s:e] = (torch.rand((T, e - s, n), generator=gen) < source[s:e][None]).to(frames.dtype)
            cache.input_gram = cache.input_gram_factor = cache.input_mu = None
            for key in [k for k in cache.extra if isinstance(k, tuple) and k[0] == "sparse-block"]:
                del cache.extra[key]
        return reproject(state, frames, settings, cache)

    resample = None
    if a.mode == "augment":
        from admm_snn.data.augment import ShiftResampler
        resample = ShiftResampler(X, (1, 28, 28), a.max_shift, a.seed, groups=a.groups)
    else:
        S.reproject = redraw_then_reproject
    t0 = time.perf_counter()
    r = train(X.clone(), lab, a.hidden, ADMMSettings(iterations=a.iterations), n_classes=10, val=val,
              progress=False, val_samples=0, resample=resample)
    accs = [m["val_accuracy"] for m in r.history]
    print(json.dumps({"mode": a.mode, "groups": a.groups if a.mode == "augment" else None, "max_shift": a.max_shift, "every": a.every, "best_val": max(accs), "best_iteration": r.best_iteration,
                      "val": accs, "train": [m["train_accuracy"] for m in r.history],
                      "seconds": [round(m["seconds"], 1) for m in r.history],
                      "total_s": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
