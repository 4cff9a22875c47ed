"""Turning command-line data options into train / validation / test tensors, the same way for every
command (train, eval, compare, sweep), so that a held-out split is always the same recordings."""

from __future__ import annotations

from dataclasses import dataclass, asdict
from pathlib import Path

import torch

from ..errors import DataError, SettingsError
from .dataset import SpikeDataset
from .digits import load_digits
from .frames import FrameSettings
from .idx import ENCODINGS, IMAGE_DATASETS, find_idx_files, has_idx_split, load_image_dataset
from .nmnist import limit_files, load_nmnist
from .split import stratified_split


#: every dataset the data options can name
DATASETS = ("digits", "nmnist", *IMAGE_DATASETS)


@dataclass(frozen=True)
class DataOptions:
    """Where the data comes from and how it is split.

    dataset        "digits" (scikit-learn's bundled 8x8 digits as spike trains; no download), "nmnist"
                   (event recordings), or an IDX image dataset: "mnist", "fashion-mnist", "kmnist".
    data_dir       N-MNIST root (``Train/<digit>/*.bin``, optionally ``Test/...``), or the folder with the
                   IDX files (``train-images-idx3-ubyte[.gz]``, ..., optionally ``t10k-*``; see data/idx.py).
    download       let tonic download N-MNIST into data_dir when it is not there (N-MNIST only).
    time_steps     T frames per sample; bin_ms: frame width (N-MNIST); denoise_ms: tonic Denoise window.
    encoding       "rate", "latency" or "current" (the image datasets: digits, mnist, ...).
    limit          use at most this many training samples (round-robin over the classes).
    val_fraction   fraction of the training samples held out for validation (model selection).
    test_fraction  fraction held out as the test split when there is no separate test set
                   (digits always; N-MNIST without a Test folder; IDX data without t10k files).
    split_seed     seed of the stratified splits and of the rate code's draws (fixed, so every command
                   sees the same held-out data and the same spikes).
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
        if self.dataset not in DATASETS:
            raise SettingsError(f"dataset={self.dataset!r} is not one of {', '.join(DATASETS)}")
        if self.dataset == "nmnist" and not self.data_dir:
            raise SettingsError("--dataset nmnist needs --data-dir ROOT (a folder with Train/<digit>/*.bin)")
        if self.dataset in IMAGE_DATASETS and not self.data_dir:
            raise SettingsError(f"--dataset {self.dataset} needs --data-dir DIR (the folder with "
                                "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])")
        if self.dataset in IMAGE_DATASETS and self.download:
            raise SettingsError(f"--download fetches N-MNIST only; put the four IDX files of {self.dataset} "
                                "(train-images-idx3-ubyte.gz, ...) into the --data-dir folder")
        if self.encoding not in ENCODINGS:
            raise SettingsError(f"encoding={self.encoding!r} is not one of {', '.join(ENCODINGS)}")
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


def _has_separate_test(opts: DataOptions) -> bool:
    """Whether the data has its own test set: N-MNIST's Test folder, the IDX datasets' t10k files."""
    if opts.dataset == "nmnist":
        root = Path(opts.data_dir)
        return (root / "Test").is_dir() or (root / "NMNIST" / "Test").is_dir()
    if opts.dataset in IMAGE_DATASETS:
        return has_idx_split(Path(opts.data_dir).expanduser(), "test", opts.dataset)
    return False


def load_splits(opts: DataOptions, need_test: bool = True) -> Splits:
    """Load the data and split it: train / val (stratified from the training samples) / test (the
    dataset's own test set where it has one, else a stratified held-out part of the training data).

    The train/val split does not depend on ``need_test``: without it a separate test set is only not
    loaded (the val split of ``admm-snn eval --split val`` is the one the model was selected on)."""
    separate = _has_separate_test(opts)
    separate_test = None
    if opts.dataset == "digits":
        full = load_digits(opts.time_steps, opts.encoding, seed=opts.split_seed)
        if opts.limit is not None and opts.limit < len(full):
            keep = limit_files([(i, int(c)) for i, c in enumerate(full.labels)], opts.limit)
            full = full.subset(torch.tensor(sorted(i for i, _ in keep)))
        source = None
    elif opts.dataset in IMAGE_DATASETS:
        kw = dict(name=opts.dataset, time_steps=opts.time_steps, encoding=opts.encoding, seed=opts.split_seed,
                  cache_dir=opts.cache_dir)
        full = load_image_dataset(opts.data_dir, "train", limit=opts.limit, **kw)
        if need_test and separate:
            separate_test = load_image_dataset(opts.data_dir, "test", **kw)
            if separate_test.sensor_shape != full.sensor_shape:
                path = find_idx_files(Path(opts.data_dir).expanduser(), "test", opts.dataset)[0]
                shape = "x".join(map(str, separate_test.sensor_shape[1:]))
                raise DataError(f"{path} holds {shape} images but the training images are "
                                f"{'x'.join(map(str, full.sensor_shape[1:]))}; the test files are from another dataset")
        source = "t10k files"
    else:
        fs = FrameSettings(opts.time_steps, opts.bin_ms, opts.denoise_ms)
        full = load_nmnist(opts.data_dir, "train", fs, cache_dir=opts.cache_dir, download=opts.download,
                           limit=opts.limit)
        if need_test and separate:
            separate_test = load_nmnist(opts.data_dir, "test", fs, cache_dir=opts.cache_dir)
        source = "Test folder"
    test_frac = 0.0 if separate else opts.test_fraction
    train_frac = 1.0 - opts.val_fraction - test_frac
    parts = stratified_split(full.labels, [train_frac, opts.val_fraction, test_frac], seed=opts.split_seed)
    train, val, test = (full.subset(p) if len(p) else None for p in parts)
    del full
    if separate_test is not None:
        test = separate_test
    info = {"data": opts.to_dict(), "n_train": len(train), "n_val": len(val) if val else 0,
            "n_test": len(test) if test else 0,
            "test_source": source if separate else f"held-out {test_frac:.0%} of training"}
    return Splits(train, val, test, info)
