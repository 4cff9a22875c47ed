"""Datasets: N-MNIST event recordings and scikit-learn digits, framed as binary spike trains."""

from .cache import default_cache_dir
from .dataset import SpikeDataset
from .digits import load_digits
from .frames import FrameSettings, denoise_events, events_to_frames
from .nmnist import NMNIST_DTYPE, limit_files, load_nmnist, read_nmnist_file, scan_nmnist_folder
from .options import DataOptions, Splits, load_splits
from .split import stratified_split

__all__ = [
    "DataOptions",
    "FrameSettings",
    "Splits",
    "SpikeDataset",
    "NMNIST_DTYPE",
    "default_cache_dir",
    "denoise_events",
    "events_to_frames",
    "limit_files",
    "load_splits",
    "load_digits",
    "load_nmnist",
    "read_nmnist_file",
    "scan_nmnist_folder",
    "stratified_split",
]
