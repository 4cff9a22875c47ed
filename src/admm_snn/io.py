"""Model files and checkpoints: safetensors tensors plus a JSON header, written atomically, never pickle.

A model file (``model.safetensors``) holds the weights ``W1..WL`` and, as metadata, the format name and
version, the layer sizes, δ, θ and the frame settings. A checkpoint (``checkpoint.safetensors``) holds
the full training state: weights, per-sample potentials, spikes and dual, the best weights so far, every
random generator's state, and (in its JSON header) the settings, the iteration, the metrics history and a
fingerprint of the training data. Both are written to a temporary file in the same folder, flushed to
disk, then renamed over the old one, so a crash (even SIGKILL mid-write) leaves the previous file intact.
Loading reads tensors and JSON only: no code from a file is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

MODEL_FORMAT = "admm-snn-model"
CHECKPOINT_FORMAT = "admm-snn-checkpoint"
FORMAT_VERSION = "1"


def atomic_save(tensors: dict, metadata: dict, path: Path) -> None:
    """Write ``tensors`` with string ``metadata`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot write to folder {path.parent}: {exc.strerror or exc}; "
                              "choose a writable --out folder") from None
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={k: str(v) for k, v in metadata.items()})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; the previous file is "
                              "unchanged (free disk space or choose another --out)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_safetensors(path: Path, expected_format: str) -> tuple[dict, dict]:
    """Tensors and metadata of a safetensors file; one-line CheckpointError if missing, corrupt or not
    of ``expected_format``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass the folder written by 'admm-snn train --out'")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({str(exc).splitlines()[0][:80]})") from None
    if metadata.get("format") != expected_format:
        raise CheckpointError(f"{path} is not an {expected_format} file (format={metadata.get('format')!r})")
    if metadata.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {metadata.get('version')!r}; this admm-snn reads "
                              f"version {FORMAT_VERSION}")
    return tensors, metadata


def save_model(path: Path, weights: list[torch.Tensor], delta: float, theta: float, extra: dict | None = None) -> None:
    """Write the trained network: tensors W1..WL and the network settings as metadata."""
    sizes = [int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights]
    meta = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, "sizes": json.dumps(sizes),
            "delta": repr(float(delta)), "theta": repr(float(theta)), "extra": json.dumps(extra or {})}
    atomic_save({f"W{i + 1}": w.float() for i, w in enumerate(weights)}, meta, path)


def load_model(path: Path) -> dict:
    """Read a model file: ``{"weights", "sizes", "delta", "theta", "extra"}``; refuses files whose
    tensors do not match the recorded network."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    try:
        sizes = json.loads(meta["sizes"])
        delta, theta = float(meta["delta"]), float(meta["theta"])
        extra = json.loads(meta.get("extra", "{}"))
        weights = [tensors[f"W{i}"] for i in range(1, len(sizes))]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has a damaged header (field {exc}); retrain or restore the file") from None
    for i, w in enumerate(weights):
        if tuple(w.shape) != (sizes[i + 1], sizes[i]):
            raise CheckpointError(f"{path}: W{i + 1} has shape {tuple(w.shape)} but the header says "
                                  f"({sizes[i + 1]}, {sizes[i]}); the file is from another network")
        if not bool(torch.isfinite(w).all()):
            raise CheckpointError(f"{path}: W{i + 1} has NaN or infinite values")
    return {"weights": weights, "sizes": sizes, "delta": delta, "theta": theta, "extra": extra}


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) of the tensors' shapes and bytes: identifies the training data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
