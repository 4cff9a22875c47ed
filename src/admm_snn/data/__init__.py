"""Datasets: N-MNIST event recordings, IDX image datasets (MNIST, Fashion-MNIST, KMNIST) and scikit-learn's
digits, as spike frames; the data options that turn them into train / validation / test splits."""

from .cache import default_cache_dir
from .dataset import SpikeDataset
from .digits import load_digits
from .frames import FrameSettings, denoise_events, events_to_frames
from .idx import IMAGE_DATASETS, encode_images, find_idx_files, load_image_dataset, read_idx, read_idx_split
from .nmnist import NMNIST_DTYPE, limit_files, load_nmnist, read_nmnist_file, scan_nmnist_folder
from .options import DataOptions, Splits, load_splits
from .split import stratified_split

__all__ = [
    "DataOptions",
    "FrameSettings",
    "IMAGE_DATASETS",
    "Splits",
    "SpikeDataset",
    "NMNIST_DTYPE",
    "default_cache_dir",
    "denoise_events",
    "encode_images",
    "events_to_frames",
    "find_idx_files",
    "limit_files",
    "load_splits",
    "load_digits",
    "load_image_dataset",
    "load_nmnist",
    "read_idx",
    "read_idx_split",
    "read_nmnist_file",
    "scan_nmnist_folder",
    "stratified_split",
]
