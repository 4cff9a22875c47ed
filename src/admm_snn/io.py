"""Model files and checkpoints: safetensors tensors plus a JSON header, written atomically, never pickle.

A model file (``model.safetensors``) holds the weights ``W1..WL`` and, as metadata, the format name and
version, the layer sizes, δ, θ and the frame settings. A convolutional network's file also records its
architecture string (``arch``, e.g. ``12c5-p2-32c5-p2-128``) and input shape (``input_shape``, C, H, W);
its tensors are then kernels (C_out, C_in, k, k) and matrices, as :mod:`conv_network` uses them, and
``sizes`` counts the units of each layer. Dense files have neither field.

A checkpoint (``checkpoint.safetensors``) holds the full training state: weights, per-sample potentials, spikes and dual, the best weights so far, every
random generator's state, and (in its JSON header) the settings, the iteration, the metrics history and a
fingerprint of the training data. Both are written to a temporary file in the same folder, flushed to
disk, renamed over the old one, and the folder is flushed, so a crash (even SIGKILL mid-write) leaves
the previous file intact and a full disk leaves the previous file loadable.
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

from .errors import CheckpointError, SettingsError
from .network import LIFParams

MODEL_FORMAT = "admm-snn-model"
CHECKPOINT_FORMAT = "admm-snn-checkpoint"
FORMAT_VERSION = "1"


#: Test-only: seconds to sleep between writing the temporary file and renaming it (widens the window in
#: which a crash test can kill a process mid-write). Never set it outside tests.
_TEST_DELAY_ENV = "ADMM_SNN_TEST_SAVE_DELAY"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a power cut (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_in(path: Path) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot write to folder {path.parent}: {exc.strerror or exc}; "
                              "choose a writable --out folder") from None
    return tmp


def _commit(tmp: str, path: Path, write) -> None:
    """Run ``write(tmp)``, fsync, give the file the usual permissions, rename it over ``path`` and fsync
    the folder. On any failure the temporary file is removed and ``path`` is untouched."""
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        delay = os.environ.get(_TEST_DELAY_ENV)
        if delay:
            import time
            time.sleep(float(delay))
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; the previous file is "
                              "unchanged (free disk space or choose another --out)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, write) -> None:
    """Create ``path`` atomically with ``write(tmp_path)``: a temporary file in the same folder, fsync,
    rename over ``path``, fsync of the folder (see :func:`_commit`)."""
    path = Path(path)
    _commit(_temp_in(path), path, write)


def atomic_save(tensors: dict, metadata: dict, path: Path) -> None:
    """Write ``tensors`` with string ``metadata`` to ``path`` atomically: a temporary file in the same
    folder, fsync, rename over ``path``, fsync of the folder. A crash at any moment leaves either the old
    or the new file, never a partial one; a failure (e.g. disk full) raises :class:`CheckpointError` and
    leaves the old file as it was."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (same guarantees as :func:`atomic_save`)."""
    path = Path(path)

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed writer left in ``folder`` (``.NAME.*.tmp`` of our files)."""
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl", "summary.json"):
        for f in Path(folder).glob(f".{name}.*.tmp"):
            try:
                f.unlink()
            except OSError:
                pass


def read_safetensors(path: Path, expected_format: str) -> tuple[dict, dict]:
    """Tensors and metadata of a safetensors file; one-line CheckpointError if missing, corrupt or not
    of ``expected_format``. Only the safetensors format is parsed (a JSON header and raw tensor bytes):
    nothing in the file is ever executed, whatever its content (e.g. a pickle renamed .safetensors)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a {expected_format} file")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass the folder written by 'admm-snn train --out'")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({first}); restore it or "
                              "retrain") from None
    if metadata.get("format") != expected_format:
        raise CheckpointError(f"{path} is not an {expected_format} file (format={metadata.get('format')!r}); "
                              "pass the file written by admm-snn")
    if metadata.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {metadata.get('version')!r}; this admm-snn reads "
                              f"version {FORMAT_VERSION} (use the admm-snn that wrote it, or retrain)")
    return tensors, metadata


def save_model(path: Path, weights: list[torch.Tensor], delta: float, theta: float, extra: dict | None = None,
               *, arch: str | None = None, input_shape=None) -> None:
    """Write the trained network: tensors W1..WL and the network settings as metadata. A convolutional
    network (:mod:`conv_network`) passes its architecture string ``arch`` and ``input_shape`` (C, H, W);
    its weights are checked against them before anything is written."""
    meta = {"format": MODEL_FORMAT, "version": FORMAT_VERSION,
            "delta": repr(float(delta)), "theta": repr(float(theta)), "extra": json.dumps(extra or {})}
    if arch is not None or input_shape is not None:
        from .conv_network import check_weights, network_layers
        if not isinstance(arch, str) or input_shape is None:
            raise SettingsError("a convolutional model needs both arch (a string such as '12c5-p2-128') and "
                                "input_shape (C, H, W)")
        if not weights or weights[-1].dim() != 2:
            raise SettingsError("the output layer's weights must be a matrix (n_L, n_{L-1})")
        net = network_layers(arch, input_shape, int(weights[-1].shape[0]))
        check_weights(net, weights)
        sizes = [net[0].n_in] + [L.n_out for L in net]
        meta["arch"] = arch.strip()
        meta["input_shape"] = json.dumps([int(v) for v in net[0].in_shape])
    else:
        sizes = [int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights]
    meta["sizes"] = json.dumps(sizes)
    atomic_save({f"W{i + 1}": w.float() for i, w in enumerate(weights)}, meta, path)


def _expected_shapes(path: Path, meta: dict, sizes: list[int]) -> tuple[list[tuple], str | None, tuple | None]:
    """The weight shapes the header promises: (n_l, n_{l-1}) for a dense model; for a convolutional
    one, those of :func:`conv_network.network_layers` of its ``arch`` and ``input_shape`` (whose unit
    counts must be the header's ``sizes``). A header that does not describe a network is a one-line
    CheckpointError naming the file and the field."""
    if "arch" not in meta and "input_shape" not in meta:
        return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)], None, None
    from .conv_network import network_layers
    try:
        arch = meta["arch"]
        shape = json.loads(meta["input_shape"])
        net = network_layers(arch, shape, sizes[-1])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has a damaged header (field {exc}); retrain or restore the file") from None
    except SettingsError as exc:
        raise CheckpointError(f"{path} has a damaged header (arch {meta.get('arch')!r}, input_shape "
                              f"{meta.get('input_shape')}: {exc}); retrain or restore the file") from None
    units = [net[0].n_in] + [L.n_out for L in net]
    if units != sizes:
        raise CheckpointError(f"{path}: the header's sizes {sizes} are not those of arch {arch!r} on inputs "
                              f"{tuple(shape)} ({units}); the file is damaged")
    return [tuple(L.weight_shape) for L in net], arch, tuple(int(v) for v in shape)


def load_model(path: Path) -> dict:
    """Read a model file: ``{"weights", "sizes", "delta", "theta", "extra", "arch", "input_shape"}``
    (``arch`` and ``input_shape`` are None for a dense network); refuses files whose tensors do not
    match the recorded network (a convolutional one's kernels and matrices are checked against the
    layer shapes of its architecture)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    try:
        sizes = json.loads(meta["sizes"])
        delta, theta = float(meta["delta"]), float(meta["theta"])
        extra = json.loads(meta.get("extra", "{}"))
        if not (isinstance(sizes, list) and len(sizes) >= 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
            raise ValueError(f"sizes={meta['sizes']}")
        if not isinstance(extra, dict):
            raise ValueError(f"extra={meta['extra'][:40]}")
        weights = [tensors[f"W{i}"] for i in range(1, len(sizes))]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has a damaged header (field {exc}); retrain or restore the file") from None
    try:
        LIFParams(delta, theta)
    except SettingsError as exc:
        raise CheckpointError(f"{path}: {exc}; the file is damaged, retrain or restore it") from None
    extra_tensors = sorted(set(tensors) - {f"W{i}" for i in range(1, len(sizes))})
    if extra_tensors:
        raise CheckpointError(f"{path} holds tensor(s) {', '.join(extra_tensors[:3])} that a {len(sizes) - 1}-layer "
                              "model does not have; the file is damaged or from another program")
    shapes, arch, input_shape = _expected_shapes(path, meta, sizes)
    for i, (w, expected) in enumerate(zip(weights, shapes)):
        if tuple(w.shape) != tuple(expected):
            raise CheckpointError(f"{path}: W{i + 1} has shape {tuple(w.shape)} but the header says "
                                  f"{tuple(expected)}; the file is from another network")
        if not w.dtype.is_floating_point:
            raise CheckpointError(f"{path}: W{i + 1} has dtype {w.dtype}, not floating point; the file is damaged")
        if not bool(torch.isfinite(w).all()):
            raise CheckpointError(f"{path}: W{i + 1} has NaN or infinite values; retrain or restore the file")
    return {"weights": weights, "sizes": sizes, "delta": delta, "theta": theta, "extra": extra,
            "arch": arch, "input_shape": input_shape}


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) of the tensors' shapes and bytes: identifies the training data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
