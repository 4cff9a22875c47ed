"""Turning command-line data options into train / validation / test tensors, the same way for every
command (train, eval, compare, sweep), so that a held-out split is always the same recordings."""

from __future__ import annotations

from dataclasses import dataclass, asdict
from pathlib import Path

import torch

from ..errors import SettingsError
from .dataset import SpikeDataset
from .digits import load_digits
from .frames import FrameSettings
from .nmnist import limit_files, load_nmnist
from .split import stratified_split


@dataclass(frozen=True)
class DataOptions:
    """Where the data comes from and how it is split.

    dataset        "digits" (scikit-learn's bundled 8x8 digits as spike trains; no download) or "nmnist".
    data_dir       N-MNIST root (``Train/<digit>/*.bin``, optionally ``Test/...``).
    download       let tonic download N-MNIST into data_dir when it is not there.
    time_steps     T frames per sample; bin_ms: frame width (N-MNIST); denoise_ms: tonic Denoise window.
    encoding       "rate" or "latency" (digits only).
    limit          use at most this many training recordings (round-robin over digits).
    val_fraction   fraction of the training recordings held out for validation (model selection).
    test_fraction  fraction held out as the test split when there is no separate test set
                   (digits always; N-MNIST when data_dir has no Test folder).
    split_seed     seed of the stratified splits (fixed, so every command sees the same held-out data).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    time_steps: int = 30
    bin_ms: float = 10.0
    denoise_ms: float | None = 10.0
    encoding: str = "rate"
    limit: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self):
        if self.dataset not in ("digits", "nmnist"):
            raise SettingsError(f"dataset={self.dataset!r} is not one of digits, nmnist")
        if self.dataset == "nmnist" and not self.data_dir:
            raise SettingsError("--dataset nmnist needs --data-dir ROOT (a folder with Train/<digit>/*.bin)")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise SettingsError(f"{name}={v} must be in [0, 1)")
        if self.limit is not None and self.limit < 1:
            raise SettingsError(f"limit={self.limit} must be >= 1 (or left out to use every recording)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise SettingsError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} "
                                "leaves no training data; keep their sum below 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Splits:
    train: SpikeDataset
    val: SpikeDataset | None
    test: SpikeDataset | None
    info: dict


def _has_test_folder(opts: DataOptions) -> bool:
    root = Path(opts.data_dir)
    return (root / "Test").is_dir() or (root / "NMNIST" / "Test").is_dir()


def load_splits(opts: DataOptions, need_test: bool = True) -> Splits:
    """Load the data and split it: train / val (stratified from the training recordings) / test (the
    dataset's own test set where it has one, else a stratified held-out part of the training data)."""
    if opts.dataset == "digits":
        full = load_digits(opts.time_steps, opts.encoding, seed=opts.split_seed)
        if opts.limit is not None and opts.limit < len(full):
            keep = limit_files([(i, int(c)) for i, c in enumerate(full.labels)], opts.limit)
            full = full.subset(torch.tensor(sorted(i for i, _ in keep)))
        separate_test = None
    else:
        fs = FrameSettings(opts.time_steps, opts.bin_ms, opts.denoise_ms)
        full = load_nmnist(opts.data_dir, "train", fs, cache_dir=opts.cache_dir, download=opts.download,
                           limit=opts.limit)
        separate_test = None
        if need_test and _has_test_folder(opts):
            separate_test = load_nmnist(opts.data_dir, "test", fs, cache_dir=opts.cache_dir)
    test_frac = 0.0 if (opts.dataset == "nmnist" and separate_test is not None) else opts.test_fraction
    train_frac = 1.0 - opts.val_fraction - test_frac
    parts = stratified_split(full.labels, [train_frac, opts.val_fraction, test_frac], seed=opts.split_seed)
    train, val, test = (full.subset(p) if len(p) else None for p in parts)
    if separate_test is not None:
        test = separate_test
    info = {"data": opts.to_dict(), "n_train": len(train), "n_val": len(val) if val else 0,
            "n_test": len(test) if test else 0,
            "test_source": "Test folder" if separate_test is not None else f"held-out {test_frac:.0%} of training"}
    return Splits(train, val, test, info)
