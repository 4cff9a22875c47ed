"""admm-snn: gradient-free training of spiking neural networks with ADMM.

The public API::

    from admm_snn import ADMMSettings, train, predict, load_nmnist, SpikingADMMClassifier

* :class:`ADMMSettings` — every setting of a run, with documented defaults; :class:`LIFParams` (δ, θ).
* :func:`train` — ADMM on time-major frames ``(T, N, n_inputs)``; returns a :class:`TrainResult`.
* :func:`predict` / :func:`forward` — the exact forward simulation of trained weights.
* :func:`save_model` / :func:`load_model` — model files (safetensors + JSON, never pickle).
* :func:`export_model` / :func:`to_nir` / :func:`to_nir_conv` / :func:`write_nir` — NIR export (dense
  and convolutional models; convolutional networks train with :func:`admm_snn.conv_train.fit_conv`).
* :func:`load_nmnist`, :func:`load_digits`, :class:`SpikeDataset`, :class:`FrameSettings`,
  :func:`stratified_split` — data.
* :class:`SpikingADMMClassifier` — a scikit-learn estimator (features, spike frames or datasets).
* :class:`AdmmSnnError` and its subclasses — the one-line errors every function raises for bad input.

The data loaders (which import tonic) and the estimator (which imports scikit-learn) are loaded on
first use, so ``import admm_snn`` and the command line start without them. Note that the name
``admm_snn.train`` is the function; its module is reached with ``from admm_snn.train import ...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .admm.settings import ADMMSettings
from .errors import AdmmSnnError, CheckpointError, DataError, DivergenceError, ResourceError, SettingsError
from .io import load_model, save_model
from .network import LIFParams, forward, predict
from .train import TrainResult, train

if TYPE_CHECKING:
    from .data import FrameSettings, SpikeDataset, load_digits, load_nmnist, stratified_split
    from .estimator import SpikingADMMClassifier
    from .export import export_model, to_nir, to_nir_conv, write_nir

try:
    from importlib.metadata import PackageNotFoundError, version as _version
    __version__ = _version("admm-snn")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0"

_LAZY = {
    "FrameSettings": "admm_snn.data",
    "SpikeDataset": "admm_snn.data",
    "load_digits": "admm_snn.data",
    "load_nmnist": "admm_snn.data",
    "stratified_split": "admm_snn.data",
    "SpikingADMMClassifier": "admm_snn.estimator",
    "export_model": "admm_snn.export",
    "to_nir": "admm_snn.export",
    "to_nir_conv": "admm_snn.export",
    "write_nir": "admm_snn.export",
}

__all__ = [
    "ADMMSettings", "LIFParams",
    "train", "TrainResult", "predict", "forward",
    "save_model", "load_model", "export_model", "to_nir", "to_nir_conv", "write_nir",
    "load_nmnist", "load_digits", "SpikeDataset", "FrameSettings", "stratified_split",
    "SpikingADMMClassifier",
    "AdmmSnnError", "DataError", "SettingsError", "CheckpointError", "DivergenceError", "ResourceError",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'admm_snn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
