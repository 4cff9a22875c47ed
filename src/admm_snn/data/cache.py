"""On-disk cache of framed datasets (safetensors files, written atomically).

A cache file holds the ``frames`` and ``labels`` tensors plus metadata (format version, settings key,
split, fingerprint of the source files). Reading checks all of them and the tensor shapes; anything
that does not match, or a file that cannot be read at all, is reported as a miss (with a warning for
unreadable files) so the caller rebuilds it. Cache problems never stop a run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import torch

CACHE_FORMAT = "admm-snn-frames-v1"
ENV_VAR = "ADMM_SNN_CACHE"


def default_cache_dir() -> Path:
    """``$ADMM_SNN_CACHE`` if set, else ``~/.cache/admm-snn``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "admm-snn"


def fingerprint_files(files: Iterable[tuple[Path, int]], root: Path) -> str:
    """SHA-256 over (path relative to ``root``, label, byte size, mtime in ns) of every file, in order."""
    h = hashlib.sha256()
    for path, label in files:
        st = os.stat(path)
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            rel = Path(path).as_posix()
        h.update(f"{rel}\t{int(label)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _metadata(settings_key: str, split: str, fingerprint: str, name: str) -> dict[str, str]:
    return {
        "format": CACHE_FORMAT,
        "settings_key": settings_key,
        "split": split,
        "fingerprint": fingerprint,
        "name": name,
    }


def load_cached(
    path: Path,
    *,
    settings_key: str,
    split: str,
    fingerprint: str,
    name: str,
    expected_shape: tuple[int, int, int],
    expected_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(frames, labels)`` at ``path``, or ``None`` if absent, stale or corrupt."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta != _metadata(settings_key, split, fingerprint, name):
                return None
            frames = f.get_tensor("frames")
            labels = f.get_tensor("labels")
        if tuple(frames.shape) != tuple(expected_shape) or frames.dtype != expected_dtype:
            raise ValueError(f"frames {tuple(frames.shape)} {frames.dtype}, expected {expected_shape}")
        if labels.dtype != torch.int64 or tuple(labels.shape) != (expected_shape[0],):
            raise ValueError(f"labels {tuple(labels.shape)} {labels.dtype}")
        if frames.is_floating_point() and not torch.isfinite(frames).all():
            raise ValueError("non-finite frames")
        return frames, labels
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
        warnings.warn(
            f"ignoring unreadable cache file {path} ({type(exc).__name__}: {exc}); rebuilding it",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def save_cached(
    path: Path,
    frames: torch.Tensor,
    labels: torch.Tensor,
    *,
    settings_key: str,
    split: str,
    fingerprint: str,
    name: str,
) -> bool:
    """Write the cache atomically (temporary file in the same folder, then ``os.replace``).

    Returns ``False`` (with a warning) if the folder cannot be written; the data is still usable.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        save_file(
            {"frames": frames.contiguous(), "labels": labels.contiguous()},
            tmp,
            metadata=_metadata(settings_key, split, fingerprint, name),
        )
        os.replace(tmp, path)
        tmp = None
        return True
    except (OSError, SafetensorError) as exc:
        warnings.warn(
            f"could not write cache file {path} ({exc}); continuing without a cache "
            f"(set ${ENV_VAR} to a writable folder)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
