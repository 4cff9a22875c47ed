"""scikit-learn's bundled 8x8 digits (1,797 samples) encoded as spike trains: a small, offline dataset."""

from __future__ import annotations

import torch

from ..errors import SettingsError
from .dataset import SpikeDataset
from .encoding import latency_code, rate_code

ENCODINGS = ("rate", "latency", "current")


def load_digits(time_steps: int = 30, encoding: str = "rate", seed: int = 0) -> SpikeDataset:
    """The scikit-learn 8x8 digits as spike frames ``(1797, time_steps, 64)``: uint8 spikes, or float32
    intensities for the ``"current"`` code.

    Pixel values 0..16 become intensities ``I = value / 16`` in [0, 1]. Encodings:

    * ``"rate"``: at every time step each pixel spikes independently with probability ``I``
      (Bernoulli draws from a ``torch.Generator`` seeded with ``seed``; same seed, same spikes).
    * ``"latency"``: each pixel with ``I > 0`` spikes exactly once, at step
      ``t = round((1 - I) * (time_steps - 1))`` (bright pixels early, ``I = 1`` at t = 0); pixels with
      ``I = 0`` never spike. Deterministic; ``seed`` is unused. Rounding is half-to-even.
    * ``"current"``: no spikes; the intensity ``I`` is the input at every time step (float32 frames).

    ``sensor_shape`` is ``(1, 8, 8)``; features are the pixels in row-major (y, x) order.
    """
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise SettingsError(f"time_steps={time_steps!r} must be an integer >= 1; use e.g. time_steps=30")
    if encoding not in ENCODINGS:
        raise SettingsError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    intensity = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0  # (N, 64)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if encoding == "rate":
        frames = rate_code(intensity, time_steps, torch.Generator().manual_seed(int(seed)))
    elif encoding == "current":
        frames = intensity[:, None, :].repeat(1, time_steps, 1)
    else:
        frames = latency_code(intensity, time_steps)
    return SpikeDataset(frames, labels, "digits", 10, (1, 8, 8))
