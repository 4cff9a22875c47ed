"""Turning event recordings into spike frames.

The pipeline is the one tonic users know: ``tonic.transforms.Denoise`` followed by
``tonic.transforms.ToFrame(sensor_size, time_window=bin_ms * 1000)``, then flattening, cutting or
zero-padding to ``time_steps`` frames and (by default) clipping counts to ``{0, 1}``.

Two tonic behaviours worth knowing (they are kept, not "fixed"):

* ``ToFrame`` starts its first time window at the timestamp of the first (surviving) event, not at
  t = 0, and drops the trailing window that is shorter than ``time_window``
  (``include_incomplete=False``). A 300 ms recording therefore gives 29 or 30 frames of 10 ms.
* ``Denoise`` is a pure-Python loop over events (roughly 15-25 ms per N-MNIST sample here). :func:`denoise_events`
  is a vectorised re-implementation that gives exactly the same events (the tests check it against
  tonic on real recordings and random ones); it is what :func:`events_to_frames` uses.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import tonic

from ..errors import DataError, SettingsError

#: Bumped whenever the framing pipeline changes in a way that changes its output (invalidates caches).
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class FrameSettings:
    """How event recordings become spike frames.

    Attributes:
        time_steps: ``T``, the number of frames kept: the first ``T`` time bins; a recording with fewer
            bins is padded with all-zero frames at the end.
        bin_ms: width of one time bin in milliseconds (tonic ``ToFrame`` ``time_window = bin_ms * 1000`` us).
        denoise_ms: tonic ``Denoise`` ``filter_time`` in milliseconds; ``None`` or ``0`` turns it off.
        binary: clip event counts to ``{0, 1}`` (spike frames, stored as uint8); ``False`` keeps the
            counts (stored as float32).
    """

    time_steps: int = 30
    bin_ms: float = 10.0
    denoise_ms: float | None = 10.0
    binary: bool = True

    def __post_init__(self):
        t = self.time_steps
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise SettingsError(f"time_steps={t!r} must be an integer >= 1; use e.g. time_steps=30")
        b = self.bin_ms
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) or not (
            math.isfinite(b) and b > 0
        ):
            raise SettingsError(f"bin_ms={b!r} must be a finite number > 0; use e.g. bin_ms=10")
        d = self.denoise_ms
        if d is not None and (
            isinstance(d, bool)
            or not isinstance(d, (int, float, np.integer, np.floating))
            or not (math.isfinite(d) and d >= 0)
        ):
            raise SettingsError(
                f"denoise_ms={d!r} must be None (off) or a finite number >= 0; use e.g. denoise_ms=10"
            )
        if not isinstance(self.binary, (bool, np.bool_)):
            raise SettingsError(f"binary={self.binary!r} must be True or False")

    @property
    def denoise_us(self) -> float | None:
        """Denoise filter time in microseconds, or ``None`` when denoising is off."""
        if self.denoise_ms is None or self.denoise_ms == 0:
            return None
        return float(self.denoise_ms) * 1000.0

    @property
    def bin_us(self) -> float:
        return float(self.bin_ms) * 1000.0

    def key(self) -> str:
        """A stable short hash (12 hex digits) of every field, used to name cache files.

        Equivalent settings share a key: ``bin_ms=10`` and ``10.0``, ``denoise_ms=None`` and ``0``.
        """
        fields = asdict(self)
        fields["time_steps"] = int(self.time_steps)
        fields["bin_ms"] = float(self.bin_ms)
        fields["denoise_ms"] = None if self.denoise_us is None else float(self.denoise_ms)
        fields["binary"] = bool(self.binary)
        fields["pipeline_version"] = PIPELINE_VERSION
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def denoise_events(events: np.ndarray, filter_time: float) -> np.ndarray:
    """Vectorised, exact equivalent of ``tonic.functional.denoise_numpy(events, filter_time)``.

    tonic walks the events in order and keeps event ``i`` when one of its 4 neighbours (x +- 1 or
    y +- 1, inside ``[0, max x] x [0, max y]`` of this recording) has a "memory" greater than ``t_i``,
    where a pixel's memory is ``t_j + filter_time`` for its last earlier event ``j`` and
    ``filter_time`` if it had none yet. Here the last earlier event of every neighbour is found with
    one sorted search instead of a Python loop.
    """
    n = len(events)
    if n == 0:
        return events[:0].copy()
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    t = events["t"]
    width = int(x.max()) + 1
    height = int(y.max()) + 1
    pixel = x * height + y
    order = np.argsort(pixel, kind="stable")
    keys = pixel[order] * n + order  # sorted: by pixel, then by event index
    t_sorted = np.asarray(t, dtype=np.float64)[order]
    idx = np.arange(n, dtype=np.int64)
    tf = np.asarray(t, dtype=np.float64)
    keep = np.zeros(n, dtype=bool)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nx, ny = x + dx, y + dy
        inside = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < height)
        q = nx * height + ny
        pos = np.searchsorted(keys, q * n + idx, side="left") - 1
        pos_c = np.clip(pos, 0, None)
        has_prev = (pos >= 0) & (keys[pos_c] // n == q)
        memory = np.where(has_prev, t_sorted[pos_c] + filter_time, float(filter_time))
        keep |= inside & (memory > tf)
    return events[keep]


def _check_events(events: np.ndarray, sensor_size) -> None:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise DataError(
            f"events lack field(s) {', '.join(missing)}; pass a structured array with fields x, y, t, p "
            "(as read_nmnist_file returns)"
        )
    if len(events) == 0:
        return
    w, h, p = sensor_size
    for field, limit in (("x", w), ("y", h), ("p", p)):
        v = events[field]
        bad = np.flatnonzero((v < 0) | (v >= limit))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"event {i} has {field}={v[i]}, outside 0..{limit - 1} of sensor_size={tuple(sensor_size)}; "
                "pass the sensor size the events were recorded with"
            )
    t = events["t"]
    if np.issubdtype(t.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            raise DataError(f"event {int(bad[0])} has non-finite timestamp t={t[bad[0]]}; drop or fix it")
    dec = np.flatnonzero(t[1:] < t[:-1])  # not np.diff: it wraps around for unsigned timestamps
    if dec.size:
        i = int(dec[0]) + 1
        raise DataError(
            f"event {i} has timestamp t={t[i]} earlier than event {i - 1} (t={t[i - 1]}); "
            "events must be sorted by time"
        )


def events_to_frames(events: np.ndarray, settings: FrameSettings, sensor_size=(34, 34, 2)) -> np.ndarray:
    """Frame one recording: ``(T, P * H * W)`` array, features in (polarity, y, x) order.

    Steps: tonic ``Denoise(filter_time=denoise_ms * 1000)`` (skipped when off; computed by the
    equivalent :func:`denoise_events`), tonic ``ToFrame(sensor_size, time_window=bin_ms * 1000)``
    (shape ``(n_bins, P, H, W)``), flatten, keep the first ``T`` bins, zero-pad to ``T``, and clip to
    ``{0, 1}`` when ``settings.binary``. Returns uint8 when binary, float32 counts otherwise.

    Raises :class:`DataError` for events outside the sensor, decreasing timestamps, or non-finite values.
    """
    if not isinstance(settings, FrameSettings):
        raise SettingsError(f"settings must be a FrameSettings, not {type(settings).__name__}")
    sensor_size = tuple(int(s) for s in sensor_size)
    if len(sensor_size) != 3 or min(sensor_size) < 1:
        raise SettingsError(f"sensor_size={sensor_size} must be (width, height, polarities), all >= 1")
    _check_events(events, sensor_size)
    w, h, p = sensor_size
    n_inputs = w * h * p
    T = int(settings.time_steps)
    out_dtype = np.uint8 if settings.binary else np.float32
    out = np.zeros((T, n_inputs), dtype=out_dtype)

    if settings.denoise_us is not None and len(events):
        events = denoise_events(events, settings.denoise_us)
    if len(events) == 0:
        # tonic's ToFrame returns one float64 frame of shape (1, P, W, H) for no events; we want zeros.
        return out

    if p == 1:
        events = events.copy()  # tonic's ToFrame sets events["p"] = 0 in place for single-polarity sensors
    frames = tonic.transforms.ToFrame(sensor_size=sensor_size, time_window=settings.bin_us)(events)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (p, h, w):
        raise DataError(
            f"tonic ToFrame returned frames of shape {frames.shape}, expected (n_bins, {p}, {h}, {w}); "
            "check the tonic version"
        )
    flat = frames.reshape(frames.shape[0], n_inputs)[:T]
    if np.issubdtype(flat.dtype, np.floating) and not np.isfinite(flat).all():
        raise DataError("framed events contain NaN or infinite values; check the event timestamps")
    if settings.binary:
        out[: flat.shape[0]] = flat > 0
    else:
        out[: flat.shape[0]] = flat
    return out
