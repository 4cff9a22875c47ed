"""Spike codes for static intensities in [0, 1]: rate (Bernoulli) and latency (one spike).

``intensity`` is an ``(N, n)`` tensor of values in [0, 1]; every function returns binary frames
``(N, T, n)`` uint8, sample-major like :class:`SpikeDataset.frames`.

* rate: at every step each input spikes independently with probability equal to its intensity.
* latency: an input with intensity ``I > 0`` spikes exactly once, at step ``t = round((1 - I)(T - 1))``
  (bright inputs early, ``I = 1`` at t = 0); ``I = 0`` never spikes. Deterministic; rounding is
  half-to-even.

Two ways of drawing the rate code: :func:`rate_code` draws every sample from one generator (the
bundled digits, :func:`admm_snn.data.load_digits`), so a sample's spikes depend on its position;
:func:`encode_per_sample` seeds each sample's draws from ``seed`` and the sample's own values, so a
sample gets the same spike train whatever other samples it is encoded with (what an estimator's
``predict`` needs: the same answer for a sample alone or in a batch, in any order).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..errors import SettingsError

ENCODINGS = ("rate", "latency")


def _check(intensity: torch.Tensor, time_steps: int, encoding: str) -> None:
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise SettingsError(f"time_steps={time_steps!r} must be an integer >= 1; use e.g. time_steps=30")
    if encoding not in ENCODINGS:
        raise SettingsError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    if intensity.dim() != 2:
        raise SettingsError(f"intensities must be a 2-D (samples, inputs) tensor, got shape {tuple(intensity.shape)}")


def rate_code(intensity: torch.Tensor, time_steps: int, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli spikes, all samples drawn from ``generator`` in one ``(N, T, n)`` tensor of draws."""
    n, n_inputs = intensity.shape
    draws = torch.rand((n, int(time_steps), n_inputs), generator=generator)
    return (draws < intensity[:, None, :]).to(torch.uint8)


def latency_code(intensity: torch.Tensor, time_steps: int) -> torch.Tensor:
    """One spike per input with intensity > 0, at step ``round((1 - I)(T - 1))``."""
    n, n_inputs = intensity.shape
    frames = torch.zeros((n, int(time_steps), n_inputs), dtype=torch.uint8)
    step = torch.round((1.0 - intensity) * (int(time_steps) - 1)).to(torch.int64)
    sample, pixel = torch.nonzero(intensity > 0, as_tuple=True)
    frames[sample, step[sample, pixel], pixel] = 1
    return frames


def sample_seed(values: np.ndarray, seed: int) -> int:
    """A 63-bit seed from ``seed`` and the bytes of one sample's values (float32)."""
    h = hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float32).tobytes(), digest_size=8,
                        key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & (2 ** 63 - 1)


def encode_per_sample(intensity: torch.Tensor, time_steps: int, encoding: str = "rate", seed: int = 0) -> torch.Tensor:
    """Spike frames ``(N, T, n)`` uint8 of ``intensity`` (N, n) in [0, 1]. With ``"rate"`` each sample's
    draws come from a generator seeded by :func:`sample_seed` (``seed`` and the sample's values), so
    the frames of a sample do not depend on the other samples."""
    intensity = torch.as_tensor(intensity, dtype=torch.float32)
    _check(intensity, time_steps, encoding)
    if encoding == "latency":
        return latency_code(intensity, time_steps)
    n, n_inputs = intensity.shape
    frames = torch.empty((n, int(time_steps), n_inputs), dtype=torch.uint8)
    rows = intensity.numpy()
    gen = torch.Generator()
    for i in range(n):
        gen.manual_seed(sample_seed(rows[i], seed))
        draws = torch.rand((int(time_steps), n_inputs), generator=gen)
        frames[i] = draws < intensity[i]
    return frames
