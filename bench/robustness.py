#!/usr/bin/env python
"""Robustness of ADMM, BPTT and the floor to shifts of the input distribution: the models of one
``admm-snn compare`` setting (same split, budget, augmentation; dense networks), evaluated on the held-out
test split as recorded and under perturbations that new recording conditions or new writers bring:

- ``drop p``: every event kept with probability 1 − p (binomial thinning of each frame's counts);
- ``noise r``: an extra event at every input and step with probability r (background activity);
- ``shift s``: every sample moved by its own uniform random whole-pixel offset in [−s, s]²;
- ``bin MS``: the recordings binned again with MS-ms frames instead of the run's (N-MNIST: the saccades
  look slower or faster; the same recordings, the same T, so narrower frames also cut the recording's end);
- ``bin MS, all``: the same with T scaled so that the frames cover the run's whole window (only faster);
- ``cut K``: the last K frames emptied (the end of the recording missing, nothing faster);
- ``first K``: the first K frames only, i.e. the output read at t = K instead of T (how early the
  network's evidence is there).

The official N-MNIST test recordings are other writers' digits, recorded apart from the training ones; none is here,
so this is a proxy: a method whose accuracy falls more under these perturbations has learned features
that are tied to the exact training distribution.

    OMP_NUM_THREADS=1 python bench/robustness.py --data-dir ../shared/data/nmnist --depths 1 --seeds 2 \
        --budget-s 60 --robust-out runs/robust

Every other option is ``admm-snn compare``'s (the model settings, ``--methods``, ``--hidden-width``, ...).
Writes robust.json and robust.md into --robust-out. ``python bench/robustness.py --summarise DIR ...``
prints the mean over several such folders (e.g. one per ``--split-seed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from admm_snn.cli import build_parser
from admm_snn.data.augment import default_shift, shift_frames
from admm_snn.data.options import load_splits
from admm_snn.experiments import compare as C
from admm_snn.experiments.common import evaluate

PERTURB_SEED = 1234


def thin(frames: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Each event kept with probability 1 − p: Binomial(count, 1 − p) per entry."""
    counts = frames.to(torch.float32)
    keep = torch.full_like(counts, 1.0 - p)
    return torch.binomial(counts, keep, generator=gen).to(frames.dtype)


def add_noise(frames: torch.Tensor, r: float, gen: torch.Generator) -> torch.Tensor:
    extra = (torch.rand(frames.shape, generator=gen) < r).to(frames.dtype)
    out = frames + extra
    return out.clamp(max=1) if frames.dtype == torch.uint8 and int(frames.max()) <= 1 else out


def shift(frames: torch.Tensor, s: int, shape, gen: torch.Generator) -> torch.Tensor:
    offsets = torch.randint(-s, s + 1, (frames.shape[1], 2), generator=gen)
    return shift_frames(frames, offsets, shape, s)


def perturbed_tests(config, test, shape, drops, noises, shifts, bins, cuts, firsts=()) -> dict[str, torch.Tensor]:
    """Name -> time-major test frames, every perturbation drawn from its own fixed seed."""
    frames = test[0]
    sets = {"as recorded": frames}
    for p in drops:
        sets[f"drop {p:g}"] = thin(frames, p, torch.Generator().manual_seed(PERTURB_SEED))
    for r in noises:
        sets[f"noise {r:g}"] = add_noise(frames, r, torch.Generator().manual_seed(PERTURB_SEED + 1))
    for s in shifts:
        sets[f"shift {s}"] = shift(frames, s, shape, torch.Generator().manual_seed(PERTURB_SEED + 2))
    for ms in bins:
        for name, T in ((f"bin {ms:g} ms", config.data.time_steps),
                        (f"bin {ms:g} ms, all", round(config.data.time_steps * config.data.bin_ms / ms))):
            if name in sets or (T == config.data.time_steps and name.endswith("all")):
                continue
            sp = load_splits(replace(config.data, bin_ms=ms, time_steps=T))
            if not torch.equal(sp.test.labels, test[1]):
                raise SystemExit("re-binned test split differs from the run's")
            sets[name] = sp.test.time_major(dtype=sp.test.frames.dtype)
    for k in cuts:
        cut = frames.clone()
        cut[frames.shape[0] - k:] = 0
        sets[f"cut {k}"] = cut
    for k in firsts:
        sets[f"first {k}"] = frames[:k]
    return sets


def summarise(folders) -> str:
    """One table over several runs' robust.json (e.g. three split seeds): the mean over every run and seed."""
    rows = [r for f in folders for r in json.loads((Path(f) / "robust.json").read_text())["rows"]]
    names = list(dict.fromkeys(n for r in rows for n in r["test"]))
    lines = [f"| method | runs | val | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names))]
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        cells = []
        for n in names:
            xs = [r["test"][n] for r in rs if n in r["test"]]
            cells.append(f"{100 * sum(xs) / len(xs):.1f}" if xs else "–")
        lines.append(f"| {m} | {len(rs)} | {100 * sum(r['val'] for r in rs) / len(rs):.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--summarise":
        print(summarise(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--robust-out", default="runs/robust")
    ap.add_argument("--drops", type=float, nargs="*", default=[0.2, 0.4])
    ap.add_argument("--noises", type=float, nargs="*", default=[0.005])
    ap.add_argument("--shifts", type=int, nargs="*", default=[2, 3])
    ap.add_argument("--bins", type=float, nargs="*", default=[8.0, 12.0])
    ap.add_argument("--cuts", type=int, nargs="*", default=[6])
    ap.add_argument("--firsts", type=int, nargs="*", default=[])
    mine, rest = ap.parse_known_args(argv)
    args = build_parser().parse_args(["compare", *rest])
    args.argv = rest
    from admm_snn.experiments.cli import bptt_settings, resolve_dataset
    from admm_snn.options import admm_settings, data_options
    resolve_dataset(args)
    data = data_options(args)
    if args.budget_s is not None:
        from admm_snn.experiments.cli import BUDGET_CAP_EPOCHS, BUDGET_CAP_ITERATIONS
        from admm_snn.options import _given_options
        given = _given_options(rest)
        args.iterations = args.iterations if "iterations" in given else BUDGET_CAP_ITERATIONS
        args.bptt_epochs = args.bptt_epochs if "bptt_epochs" in given else BUDGET_CAP_EPOCHS
    admm, bptt = admm_settings(args), bptt_settings(args, data.dataset)
    config = C.CompareConfig(data=data, admm=admm, bptt=bptt, depths=args.depths or [1], seeds=args.seeds,
                             hidden_width=args.hidden_width, methods=args.methods, budget_s=args.budget_s,
                             augment_shift=args.augment_shift)
    torch.set_num_threads(1)
    splits = load_splits(config.data)
    X, labels, shape = C._time_major(splits.train), splits.train.labels, splits.train.sensor_shape
    val = (C._time_major(splits.val), splits.val.labels)
    test = (C._time_major(splits.test), splits.test.labels)
    aug = default_shift(shape) if config.augment_shift is None else config.augment_shift
    sets = perturbed_tests(config, test, shape, mine.drops, mine.noises, mine.shifts,
                           mine.bins if config.data.dataset == "nmnist" else [], mine.cuts, mine.firsts)
    params = admm.lif
    rows = []
    for depth in config.depths:
        hidden = [config.hidden_width] * depth
        for i in range(config.seeds):
            seed = admm.seed + i
            s = admm.replace(seed=seed)
            floor = C.run_floor(X, labels, val, test, hidden, s)
            for m in config.methods:
                t0 = time.perf_counter()
                if m == "floor":
                    r = floor
                elif m == "admm":
                    r = C.run_admm(X, labels, val, test, hidden, s, floor, budget_s=config.budget_s,
                                   resample=C._resampler(X, shape, aug, seed))
                else:
                    bs = bptt.__class__(**{**asdict(bptt), "seed": bptt.seed + i})
                    r = C.run_bptt(X, labels, val, test, hidden, bs, params, budget_s=config.budget_s,
                                   resample=C._resampler(X, shape, aug, bs.seed))
                acc = {name: evaluate(r["weights"], f, test[1], params)["accuracy"] for name, f in sets.items()}
                rows.append({"method": m, "depth": depth, "seed": i, "val": r["val_accuracy"], "test": acc,
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(mine.robust_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robust.json").write_text(json.dumps({"argv": rest, "rows": rows, "augment_shift": aug}, indent=1))
    names = list(sets)
    lines = ["| method | depth | val | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names))]
    for m in config.methods:
        for depth in config.depths:
            rs = [r for r in rows if r["method"] == m and r["depth"] == depth]
            mean = lambda xs: sum(xs) / len(xs)
            cells = [f"{100 * mean([r['test'][n] for r in rs]):.1f}" for n in names]
            lines.append(f"| {m} | {depth} | {100 * mean([r['val'] for r in rs]):.1f} | " + " | ".join(cells) + " |")
    (out / "robust.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
