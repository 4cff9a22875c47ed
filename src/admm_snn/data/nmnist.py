"""N-MNIST: reading the original binary recordings, scanning the folder layout, framing, caching.

Layout (as distributed by Orchard et al. and as tonic extracts it)::

    <root>/Train/<digit>/<id>.bin      <root>/Test/<digit>/<id>.bin

``tonic.datasets.NMNIST(save_to=root)`` downloads into ``<root>/NMNIST/``; :func:`load_nmnist`
accepts either ``<root>`` or ``<root>/NMNIST`` holding the split folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import tonic

from ..errors import DataError, SettingsError
from .cache import default_cache_dir, fingerprint_files, load_cached, save_cached
from .listing import folder_listing
from .dataset import SpikeDataset
from .frames import FrameSettings, events_to_frames

#: tonic's event dtype for N-MNIST: fields x, y, t, p, all int64 (t in microseconds, p in {0, 1}).
NMNIST_DTYPE = tonic.datasets.NMNIST.dtype
#: (width, height, polarities), tonic's convention.
SENSOR_SIZE = (34, 34, 2)
#: (polarity, y, x): the order of the flattened frame features.
SENSOR_SHAPE = (2, 34, 34)
N_CLASSES = 10
_SPLIT_FOLDERS = {"train": "Train", "test": "Test"}
#: ATIS "timestamp overflow" marker rows (y == 240): not events; tonic adds 2**13 us to later timestamps.
_OVERFLOW_Y = 240
_OVERFLOW_INCREMENT = 2**13


def _check_split(split) -> str:
    s = str(split).lower()
    if s not in _SPLIT_FOLDERS:
        raise SettingsError(f"split={split!r} must be 'train' or 'test'")
    return s


def read_nmnist_file(path) -> np.ndarray:
    """Read one N-MNIST recording into a structured array with tonic's dtype (x, y, t, p: int64).

    Format: 5 bytes per event, big-endian: byte 0 = x, byte 1 = y, bit 7 of byte 2 = polarity
    (1 = ON), the other 23 bits (byte 2 & 0x7F, byte 3, byte 4) = timestamp in microseconds. Rows with
    y == 240 are timestamp-overflow markers and are handled exactly as ``tonic.io.read_mnist_file``
    does (dropped; 2**13 us added to all later timestamps), so the result equals tonic's.

    Raises :class:`DataError` (naming the file, and the event index and value where there is one) for a
    missing or unreadable file, an empty file, a size that is not a multiple of 5, x or y outside
    0..33, or a timestamp smaller than the previous event's. Event indices count 5-byte records from 0.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"N-MNIST file {path} does not exist; check the path or re-download the dataset") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an N-MNIST .bin file; pass a recording file") from None
    except OSError as exc:
        raise DataError(f"cannot read N-MNIST file {path} ({exc.strerror or exc}); check its permissions") from None
    if len(data) == 0:
        raise DataError(f"N-MNIST file {path} is empty (0 bytes); re-download or remove it")
    if len(data) % 5:
        raise DataError(
            f"N-MNIST file {path} has {len(data)} bytes, not a multiple of 5 (5 bytes per event): it is "
            "truncated or not an N-MNIST recording; re-download it"
        )
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == _OVERFLOW_Y
    if overflow.any():
        t = t + _OVERFLOW_INCREMENT * np.cumsum(overflow)
    rows = np.flatnonzero(~overflow)
    if rows.size == 0:
        raise DataError(f"N-MNIST file {path} holds no events (only timestamp-overflow markers); re-download it")
    for name, v in (("x", x), ("y", y)):
        bad = rows[v[rows] > SENSOR_SIZE[0] - 1]
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"N-MNIST file {path}: event {i} has {name}={int(v[i])}, outside 0..33; the file is corrupt "
                "or not an N-MNIST recording, re-download it"
            )
    tr = t[rows]
    dec = np.flatnonzero(np.diff(tr) < 0)
    if dec.size:
        i, j = int(rows[dec[0] + 1]), int(rows[dec[0]])
        raise DataError(
            f"N-MNIST file {path}: event {i} has timestamp t={int(t[i])} us, earlier than event {j} "
            f"(t={int(t[j])} us); timestamps must not decrease, the file is corrupt, re-download it"
        )
    events = np.empty(rows.size, dtype=NMNIST_DTYPE)
    events["x"] = x[rows]
    events["y"] = y[rows]
    events["t"] = tr
    events["p"] = p[rows]
    return events


def scan_nmnist_folder(root, split="train") -> list[tuple[Path, int]]:
    """All recordings of one split: ``[(path, digit), ...]`` from ``<root>/Train|Test/<digit>/*.bin``.

    Order is deterministic: digits 0..9, then file names in sorted order. Raises :class:`DataError` if
    ``root`` is missing, the split folder is missing (saying which split folder does exist), the split
    folder lacks any of the digit subfolders 0..9, or a digit folder has no ``.bin`` files.
    """
    split = _check_split(split)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"N-MNIST folder {root} does not exist; pass the folder that holds Train/ and Test/, "
            "or use --download to fetch N-MNIST into it"
        )
    if not root.is_dir():
        raise DataError(f"{root} is a file, not an N-MNIST folder; pass the folder that holds Train/ and Test/")
    folder = _SPLIT_FOLDERS[split]
    other = _SPLIT_FOLDERS["test" if split == "train" else "train"]
    sub = root / folder
    if not sub.is_dir():
        if (root / other).is_dir():
            raise DataError(
                f"no {folder} folder in {root}; this folder only has {other} "
                f"(use split='{other.lower()}', or --download to fetch the {split} split)"
            )
        raise DataError(
            f"{root} is not an N-MNIST folder: it has no Train or Test subfolder (it holds {folder_listing(root)}); "
            "pass the folder that holds them, or use --download"
        )
    digits = [d for d in range(N_CLASSES) if (sub / str(d)).is_dir()]
    if not digits:
        raise DataError(
            f"{sub} is not N-MNIST-like: expected digit subfolders 0..9, found {folder_listing(sub)}; "
            "pass the N-MNIST dataset folder"
        )
    missing = [d for d in range(N_CLASSES) if d not in digits]
    if missing:
        raise DataError(
            f"{sub} lacks digit subfolder(s) {', '.join(map(str, missing))}; an N-MNIST split has folders "
            "0..9, re-download or restore them"
        )
    files: list[tuple[Path, int]] = []
    for d in range(N_CLASSES):
        dfolder = sub / str(d)
        found = sorted((f for f in dfolder.iterdir() if f.suffix == ".bin" and f.is_file()), key=lambda f: f.name)
        if not found:
            raise DataError(
                f"digit folder {dfolder} has no .bin recordings; re-download the dataset or restore the files"
            )
        files.extend((f, d) for f in found)
    return files


def limit_files(files: list[tuple[Path, int]], limit: int) -> list[tuple[Path, int]]:
    """At most ``limit`` files, balanced over classes and deterministic.

    Files are taken round-robin over the digits in each digit's sorted order (first file of digit 0,
    of digit 1, ..., then the second file of each, ...), so ``limit=50`` gives the first 5 files of every
    digit and ``limit=55`` the first 6 of digits 0..4 and the first 5 of the others. A digit that runs
    out leaves its share to the others. The result keeps the input order (by digit, then name).
    """
    by_label: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(files):
        by_label.setdefault(label, []).append(i)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < limit and any(rank < len(v) for v in by_label.values()):
        for label in sorted(by_label):
            if rank < len(by_label[label]) and len(chosen) < limit:
                chosen.append(by_label[label][rank])
        rank += 1
    return [files[i] for i in sorted(chosen)]


def _has_split(folder: Path, split: str) -> bool:
    return (folder / _SPLIT_FOLDERS[split]).is_dir()


def _download(root: Path, split: str) -> Path:
    """Download (and extract) one split with tonic; returns the folder holding Train/ or Test/."""
    try:
        ds = tonic.datasets.NMNIST(save_to=str(root), train=(split == "train"))
    except Exception as exc:  # noqa: BLE001 - network/archive failures become one user-facing line
        raise DataError(
            f"could not download the N-MNIST {split} split into {root} ({type(exc).__name__}: {exc}); check the "
            "internet connection, or download it from https://www.garrickorchard.com/datasets/n-mnist and "
            f"unzip it into {root / 'NMNIST'}"
        ) from exc
    return Path(ds.location_on_system)


def _locate(root: Path, split: str, download: bool) -> Path:
    """The folder holding the split folder: ``root`` or ``root/NMNIST``, downloading if asked."""
    candidates = (root, root / "NMNIST")
    for cand in candidates:
        if _has_split(cand, split):
            return cand
    if download:
        return _download(root, split)
    for cand in candidates:
        if _has_split(cand, "train") or _has_split(cand, "test"):
            scan_nmnist_folder(cand, split)  # raises the "only has Train/Test" error
    if not root.exists():
        raise DataError(
            f"N-MNIST folder {root} does not exist; pass --download to fetch N-MNIST into it, "
            "or point to the folder that holds Train/ and Test/"
        )
    raise DataError(
        f"{root} has no N-MNIST Train/ or Test/ folder (it holds {folder_listing(root)}); pass --download to "
        "fetch N-MNIST into it, or point to the folder that holds them"
    )


def load_nmnist(
    root,
    split="train",
    settings: FrameSettings = FrameSettings(),
    cache_dir=None,
    download=False,
    limit=None,
    progress=False,
) -> SpikeDataset:
    """Load one N-MNIST split as framed spikes, ``frames`` of shape ``(N, T, 2312)``.

    Args:
        root: folder holding ``Train/`` and/or ``Test/`` (or ``NMNIST/`` with them, as tonic downloads).
        split: ``"train"`` or ``"test"``.
        settings: how events become frames (see :class:`FrameSettings` and :func:`events_to_frames`).
        cache_dir: where framed tensors are cached; default ``$ADMM_SNN_CACHE`` or ``~/.cache/admm-snn``.
            The cache file is keyed by ``settings.key()``, the split, and a fingerprint of the file list
            (relative paths, labels, byte sizes, mtimes), so editing the data or the settings rebuilds
            it. A cache file that cannot be read is ignored (with a warning) and rebuilt. Stale cache
            files are not deleted.
        download: if the split is not found, download it with ``tonic.datasets.NMNIST(save_to=root)``
            (needs internet; the files land in ``<root>/NMNIST``).
        limit: keep at most this many recordings, balanced over digits (see :func:`limit_files`).
        progress: show a tqdm progress bar while framing.

    Raises :class:`DataError` for a missing/malformed folder or recording (naming the file).
    """
    split = _check_split(split)
    if not isinstance(settings, FrameSettings):
        raise SettingsError(f"settings must be a FrameSettings, not {type(settings).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise SettingsError(f"limit={limit!r} must be None (all files) or an integer >= 1")
    root = Path(root).expanduser()
    data_root = _locate(root, split, download)
    files = scan_nmnist_folder(data_root, split)
    if limit is not None:
        files = limit_files(files, int(limit))

    name = f"nmnist-{split}"
    n, T, n_inputs = len(files), int(settings.time_steps), int(np.prod(SENSOR_SHAPE))
    dtype = torch.uint8 if settings.binary else torch.float32
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    fingerprint = fingerprint_files(files, data_root)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    cache_file = cache_dir / f"{name}-{settings.key()}-{fingerprint[:16]}.safetensors"
    meta = dict(settings_key=settings.key(), split=split, fingerprint=fingerprint, name=name)

    cached = load_cached(cache_file, expected_shape=(n, T, n_inputs), expected_dtype=dtype, **meta)
    if cached is not None and torch.equal(cached[1], labels):
        return SpikeDataset(cached[0], labels, name, N_CLASSES, SENSOR_SHAPE)

    frames = torch.zeros((n, T, n_inputs), dtype=dtype)
    # Fill through a numpy view: per-sample torch copies go through intra-op threading, which on a busy
    # machine made each small copy take ~10 ms (vs ~0.02 ms here).
    frames_np = frames.numpy()
    iterator = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc=f"framing N-MNIST {split}", unit="file")
    for i, (path, _) in enumerate(iterator):
        events = read_nmnist_file(path)
        try:
            framed = events_to_frames(events, settings, SENSOR_SIZE)
        except DataError as exc:
            raise DataError(f"N-MNIST file {path}: {exc}") from None
        frames_np[i] = framed
    save_cached(cache_file, frames, labels, **meta)
    return SpikeDataset(frames, labels, name, N_CLASSES, SENSOR_SHAPE)
