"""Static image datasets in the IDX format (MNIST, Fashion-MNIST, KMNIST), encoded as spike trains.

Files (as in any MNIST download; Fashion-MNIST and KMNIST ship the same four names)::

    <root>/train-images-idx3-ubyte[.gz]   <root>/train-labels-idx1-ubyte[.gz]
    <root>/t10k-images-idx3-ubyte[.gz]    <root>/t10k-labels-idx1-ubyte[.gz]   (optional: the test split)

``<root>/<Name>/raw/`` (torchvision's layout: ``MNIST``, ``FashionMNIST``, ``KMNIST``) and
``<root>/<Name>/`` are looked in as well, and the names with a dot (``train-images.idx3-ubyte``, as some
unzip tools write them) are accepted. An uncompressed file is preferred to its ``.gz`` twin.

IDX: a 4-byte magic number ``00 00 08 D`` (0x08: unsigned bytes, D dimensions: 3 for images, 1 for
labels), D big-endian uint32 sizes, then the bytes in row-major order.

Encodings of a pixel of grey level ``g`` (intensity ``I = g / 255``) over ``T`` time steps:

* ``"rate"`` (the default): at every step the input spikes with probability ``I``: a Bernoulli draw per
  pixel per step. The draws of every image come from their own counter-based generator (numpy's Philox,
  keyed by the seed, the split and the image's index in its file), so an image has the same spikes
  whatever ``limit`` or split selects it, and the same seed gives the same spikes on any machine.
  Pixels with ``I = 0`` never spike; ``I = 1`` spikes at every step. Binary frames, stored as uint8.
* ``"latency"``: each pixel with ``I > 0`` spikes once, at step ``round((1 - I) (T - 1))`` (bright pixels
  first); deterministic. uint8.
* ``"current"``: no spikes: the intensity ``I`` is the input at every step (a constant current into the
  first layer). float32 frames, so 4 times the memory of the spike codes (20,000 images, T = 20:
  1.25 GB instead of 314 MB) and no cache file (they are rebuilt from the images in a second).

The encoded frames of the spike codes are cached like N-MNIST's (``cache.py``): keyed by the encoding,
T, the seed, the limit and a fingerprint (sizes and times) of the two files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, SettingsError
from .cache import default_cache_dir, fingerprint_files, load_cached, save_cached
from .listing import folder_listing
from .dataset import SpikeDataset

#: dataset name → torchvision's folder name (``<root>/<folder>/raw/`` is searched too).
IMAGE_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
ENCODINGS = ("rate", "latency", "current")
N_CLASSES = 10
_PREFIX = {"train": "train", "test": "t10k"}
_SPLIT_CODE = {"train": 0, "test": 1}
_UBYTE = 0x08
#: Bumped whenever the encoding changes its output (invalidates caches).
ENCODING_VERSION = 1


def _check_name(name) -> str:
    if name not in IMAGE_DATASETS:
        raise SettingsError(f"dataset={name!r} is not an IDX image dataset; use one of {', '.join(IMAGE_DATASETS)}")
    return name


def _check_split(split) -> str:
    s = str(split).lower()
    if s not in _PREFIX:
        raise SettingsError(f"split={split!r} must be 'train' or 'test'")
    return s


def read_idx(path, dims: int) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` or not) of unsigned bytes with ``dims`` dimensions.

    Raises :class:`DataError` naming the file for a missing or unreadable file, a damaged or truncated
    gzip stream, a wrong magic number (another type or number of dimensions, or not an IDX file) and a
    data length that differs from what the header's sizes say.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist; check the folder or re-download the dataset") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an IDX file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} cannot be decompressed ({exc}): it is truncated, damaged or not gzip data; "
                        "re-download it") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path} ({exc.strerror or exc}); check its permissions") from None
    what = "images (3 dimensions)" if dims == 3 else "labels (1 dimension)" if dims == 1 else f"{dims}-D data"
    if len(data) < 4 + 4 * dims:
        raise DataError(f"{path} has {len(data)} bytes, too few for an IDX header of {what}; it is truncated "
                        "or not an IDX file, re-download it")
    magic = data[:4]
    if magic[0] or magic[1] or magic[2] != _UBYTE or magic[3] != dims:
        expected = f"00 00 08 {dims:02x}"
        raise DataError(f"{path} has magic number {magic.hex(' ')}, expected {expected} for unsigned-byte {what}: "
                        "it is not the IDX file its name says (images and labels swapped?) or not an IDX file")
    sizes = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    offset = 4 + 4 * dims
    expected_len = int(np.prod(sizes, dtype=np.int64))
    have = len(data) - offset
    if have != expected_len:
        kind = "truncated" if have < expected_len else "longer than its header says"
        raise DataError(f"{path}: the header says {' x '.join(map(str, sizes))} = {expected_len} bytes of data "
                        f"but the file holds {have}; it is {kind}, re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(sizes)


def _candidates(root: Path, name: str) -> list[Path]:
    folder = IMAGE_DATASETS[name]
    return [root, root / folder / "raw", root / folder]


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    """``<prefix>-<kind>-idxD-ubyte`` (or with ``.`` before idx), uncompressed first, then ``.gz``."""
    d = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{d}-ubyte", f"{prefix}-{kind}.idx{d}-ubyte"):
        for suffix in ("", ".gz"):
            p = folder / (stem + suffix)
            if p.is_file():
                return p
    return None


def find_idx_files(root, split: str = "train", name: str = "mnist") -> tuple[Path, Path] | None:
    """The (images, labels) files of one split under ``root``, or ``None`` when neither file is there.

    Raises :class:`DataError` when only one of the two is found (naming the missing one)."""
    split, name = _check_split(split), _check_name(name)
    prefix = _PREFIX[split]
    for folder in _candidates(Path(root).expanduser(), name):
        images, labels = _find(folder, prefix, "images"), _find(folder, prefix, "labels")
        if images is not None and labels is not None:
            return images, labels
        if images is not None or labels is not None:
            have = images if images is not None else labels
            missing = f"{prefix}-{'labels-idx1' if labels is None else 'images-idx3'}-ubyte[.gz]"
            raise DataError(f"{have} has no partner: {missing} is missing from {folder}; an IDX split needs both "
                            "the images and the labels file")
    return None


def has_idx_split(root, split: str = "test", name: str = "mnist") -> bool:
    """Whether ``root`` holds the images and labels files of ``split``."""
    return find_idx_files(root, split, name) is not None


def _locate(root: Path, split: str, name: str) -> tuple[Path, Path]:
    if not root.exists():
        raise DataError(f"{name} folder {root} does not exist; pass the folder that holds "
                        f"train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; pass the folder that holds "
                        "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    found = find_idx_files(root, split, name)
    if found is None:
        prefix = _PREFIX[split]
        raise DataError(f"no {name} {split} files in {root}: expected {prefix}-images-idx3-ubyte[.gz] and "
                        f"{prefix}-labels-idx1-ubyte[.gz] there or in {root / IMAGE_DATASETS[name] / 'raw'} "
                        f"(it holds {folder_listing(root)})")
    return found


def read_idx_split(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` uint8 of one split, checked to belong together and
    to hold class indices 0..9."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} "
                        "labels; the two files must come from the same download")
    if images.shape[0] == 0:
        raise DataError(f"{images_path} holds no images")
    bad = np.flatnonzero(labels >= N_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{labels_path}: label {int(labels[i])} of image {i} is outside 0..{N_CLASSES - 1}; "
                        "the file is damaged or not a 10-class label file")
    return images, labels


def encode_images(images: np.ndarray, time_steps: int, encoding: str = "rate", seed: int = 0,
                  ids=None, stream: int = 0) -> torch.Tensor:
    """Spike frames ``(N, T, H*W)`` of grey-level ``images`` ``(N, H, W)`` or ``(N, H*W)`` uint8 (see the
    module docstring for the codes). ``ids``: the images' indices in their file (default 0..N-1), which
    with ``seed`` and ``stream`` (0 train, 1 test) key each image's rate-code draws."""
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise SettingsError(f"time_steps={time_steps!r} must be an integer >= 1; use e.g. time_steps=20")
    if encoding not in ENCODINGS:
        raise SettingsError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise SettingsError(f"images have dtype {images.dtype}; expected uint8 grey levels 0..255")
    n = images.shape[0]
    flat = images.reshape(n, -1)
    T = int(time_steps)
    scale = np.float32(1.0 / 255.0)
    if encoding == "current":
        intensity = torch.from_numpy(flat.astype(np.float32) * scale)
        return intensity[:, None, :].repeat(1, T, 1)
    frames = torch.zeros((n, T, flat.shape[1]), dtype=torch.uint8)
    out = frames.numpy()
    if encoding == "latency":
        step = np.rint((1.0 - flat.astype(np.float64) / 255.0) * (T - 1)).astype(np.int64)  # half to even
        sample, pixel = np.nonzero(flat)
        out[sample, step[sample, pixel], pixel] = 1
        return frames
    ids = np.arange(n) if ids is None else np.asarray(ids)
    base = (int(seed) % 2 ** 64) << 64 | (int(stream) & 0xFFFFFFFF) << 32
    for i in range(n):
        nz = np.flatnonzero(flat[i])
        if nz.size:
            gen = np.random.Generator(np.random.Philox(key=base | (int(ids[i]) & 0xFFFFFFFF)))
            out[i][:, nz] = gen.random((T, nz.size), dtype=np.float32) < flat[i, nz] * scale
    return frames


def _encoding_key(encoding: str, time_steps: int, seed: int, limit) -> str:
    text = json.dumps({"encoding": encoding, "time_steps": int(time_steps), "seed": int(seed),
                       "limit": None if limit is None else int(limit), "version": ENCODING_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_image_dataset(root, split="train", name: str = "mnist", time_steps: int = 20, encoding: str = "rate",
                       seed: int = 0, limit=None, cache_dir=None) -> SpikeDataset:
    """One split of an IDX image dataset as spike frames ``(N, T, H*W)``.

    Args:
        root: the folder with the IDX files (or with ``<Name>/raw/`` holding them, see the module doc).
        split: ``"train"`` (``train-*`` files) or ``"test"`` (``t10k-*``).
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``: names the dataset and torchvision's folder.
        time_steps, encoding, seed: the spike code (see the module docstring).
        limit: keep at most this many images, balanced over the classes (round-robin in file order, as
            :func:`admm_snn.data.limit_files`); the rate code of a kept image does not depend on it.
        cache_dir: where encoded frames are cached (default ``$ADMM_SNN_CACHE`` or ``~/.cache/admm-snn``).

    Raises :class:`DataError` naming the file for missing, truncated or malformed files.
    """
    split, name = _check_split(split), _check_name(name)
    if encoding not in ENCODINGS:
        raise SettingsError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise SettingsError(f"time_steps={time_steps!r} must be an integer >= 1; use e.g. time_steps=20")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise SettingsError(f"limit={limit!r} must be None (all images) or an integer >= 1")
    root = Path(root).expanduser()
    images_path, labels_path = _locate(root, split, name)
    images, labels_np = read_idx_split(images_path, labels_path)
    ids = np.arange(images.shape[0])
    if limit is not None and limit < images.shape[0]:
        from .nmnist import limit_files
        ids = np.array([i for i, _ in limit_files(list(zip(range(len(labels_np)), labels_np.tolist())), int(limit))])
    labels = torch.from_numpy(labels_np[ids].astype(np.int64))
    sensor_shape = (1, images.shape[1], images.shape[2])
    ds_name = f"{name}-{split}"
    n, T, n_inputs = len(ids), int(time_steps), images.shape[1] * images.shape[2]
    if encoding == "current":
        return SpikeDataset(encode_images(images[ids], T, encoding), labels, ds_name, N_CLASSES, sensor_shape)
    key = _encoding_key(encoding, T, seed, limit)
    fingerprint = fingerprint_files([(images_path, 0), (labels_path, 1)], root)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    cache_file = cache_dir / f"{ds_name}-{key}-{fingerprint[:16]}.safetensors"
    meta = dict(settings_key=key, split=split, fingerprint=fingerprint, name=ds_name)
    cached = load_cached(cache_file, expected_shape=(n, T, n_inputs), expected_dtype=torch.uint8, **meta)
    if cached is not None and torch.equal(cached[1], labels):
        return SpikeDataset(cached[0], labels, ds_name, N_CLASSES, sensor_shape)
    frames = encode_images(images[ids], T, encoding, seed, ids=ids, stream=_SPLIT_CODE[split])
    save_cached(cache_file, frames, labels, **meta)
    return SpikeDataset(frames, labels, ds_name, N_CLASSES, sensor_shape)
