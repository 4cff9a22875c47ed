"""Fuzzing (hypothesis, bounded): random and mutated N-MNIST recordings through read_nmnist_file and
events_to_frames, random event arrays through events_to_frames, random and mutated model/checkpoint
files through the loaders, random settings through ADMMSettings and a tiny train(). Nothing may raise
anything but an AdmmSnnError subclass.

The number of inputs tried (and how many were accepted / refused, by error class) is counted in
``COUNTS`` and printed at the end of the module (run with ``-s`` to see it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from admm_snn.admm.settings import ADMMSettings
from admm_snn.data import NMNIST_DTYPE, FrameSettings, events_to_frames, read_nmnist_file
from admm_snn.errors import AdmmSnnError
from admm_snn.io import load_model, save_model
from admm_snn.train import train

COUNTS: Counter = Counter()
#: Examples per fuzz test (the training fuzz, ~0.1 s each, runs half as many); raise it for a longer hunt, e.g.
#: ADMM_SNN_FUZZ_EXAMPLES=3000 pytest tests/test_fuzz.py -s
EXAMPLES = int(os.environ.get("ADMM_SNN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(v for k, v in COUNTS.items() if k.endswith(":tried"))
    lines = [f"  {k}: {v}" for k, v in sorted(COUNTS.items())]
    print(f"\nfuzz inputs tried: {total}\n" + "\n".join(lines))


def _outcome(target: str, fn, *args, **kwargs):
    """Call ``fn``; count the outcome; let only AdmmSnnError through (as a refusal)."""
    COUNTS[f"{target}:tried"] += 1
    try:
        result = fn(*args, **kwargs)
    except AdmmSnnError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, f"{type(exc).__name__} message is not one line: {msg!r}"
        COUNTS[f"{target}:refused:{type(exc).__name__}"] += 1
        return None
    COUNTS[f"{target}:accepted"] += 1
    return result


@pytest.fixture(scope="module")
def recording(nmnist_root) -> bytes:
    path = sorted((nmnist_root / "Train" / "7").glob("*.bin"))[0]
    return path.read_bytes()


frame_settings = st.builds(
    FrameSettings,
    time_steps=st.integers(1, 12),
    bin_ms=st.sampled_from([0.05, 1.0, 3.3, 10.0, 50.0, 1e4]),
    denoise_ms=st.sampled_from([None, 0, 0.5, 10.0, 1e6]),
    binary=st.booleans(),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, value in ops:
        if not b:
            b = bytearray([value])
            continue
        i = pos % len(b)
        if kind == "set":
            b[i] = value
        elif kind == "flip":
            b[i] ^= 1 << (value % 8)
        elif kind == "insert":
            b.insert(i, value)
        elif kind == "delete":
            del b[i]
        elif kind == "truncate":
            del b[i:]
        elif kind == "duplicate":
            b[i:i] = b[i:i + 5 * (1 + value % 4)]
    return bytes(b)


mutations = st.lists(st.tuples(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "duplicate"]),
                               st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


@FUZZ
@given(prefix_events=st.integers(0, 1200), ops=mutations, fs=frame_settings)
def test_mutated_recordings(tmp_path, recording, prefix_events, ops, fs):
    path = tmp_path / "rec.bin"
    path.write_bytes(_mutate(recording[:5 * prefix_events] if prefix_events else recording, ops))
    events = _outcome("read_nmnist_file(mutated)", read_nmnist_file, path)
    if events is not None:
        frames = _outcome("events_to_frames(mutated)", events_to_frames, events, fs)
        if frames is not None:
            assert frames.shape == (fs.time_steps, 2312)


def _records(n: int, seed: int, tidy: bool) -> bytes:
    """``n`` random 5-byte events: with ``tidy``, mostly in the sensor with non-decreasing timestamps and a
    few overflow markers (y = 240); otherwise any bytes."""
    rng = np.random.default_rng(seed)
    if not tidy:
        return rng.integers(0, 256, 5 * n, dtype=np.uint8).tobytes()
    x = rng.integers(0, 34, n)
    y = np.where(rng.random(n) < 0.02, 240, rng.integers(0, 34, n))
    if n and rng.random() < 0.2:  # one event outside the sensor
        x[rng.integers(0, n)] = rng.integers(34, 256)
    t = np.sort(rng.integers(0, 2**23, n)) if rng.random() < 0.8 else rng.integers(0, 2**23, n)
    p = rng.integers(0, 2, n)
    rec = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    return rec.tobytes()


@FUZZ
@given(n=st.integers(0, 600), seed=st.integers(0, 2**32 - 1), tidy=st.booleans(), extra=st.binary(max_size=4),
       fs=frame_settings)
def test_random_recordings(tmp_path, n, seed, tidy, extra, fs):
    path = tmp_path / "rec.bin"
    path.write_bytes(_records(n, seed, tidy) + (extra if not tidy else b""))
    events = _outcome("read_nmnist_file(random)", read_nmnist_file, path)
    if events is not None:
        _outcome("events_to_frames(random)", events_to_frames, events, fs)


@FUZZ
@given(n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1), inside=st.booleans(), sort=st.booleans(),
       fs=frame_settings, sensor=st.sampled_from([(34, 34, 2), (8, 5, 1), (1, 1, 1)]))
def test_random_event_arrays(n, seed, inside, sort, fs, sensor):
    rng = np.random.default_rng(seed)
    ev = np.empty(n, dtype=NMNIST_DTYPE)
    w, h, p = sensor
    lo, hi = (0, 0) if inside else (-2, 3)
    ev["x"] = rng.integers(lo, w + hi, n)
    ev["y"] = rng.integers(lo, h + hi, n)
    ev["p"] = rng.integers(lo, p + hi, n)
    ev["t"] = rng.integers(-10 if not inside else 0, 400_000, n)
    if sort:
        ev["t"] = np.sort(ev["t"])
    _outcome("events_to_frames(arrays)", events_to_frames, ev, fs, sensor)


# ------------------------------------------------------------------------------------------------------
# Model and checkpoint files
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("model")
    g = torch.Generator().manual_seed(0)
    save_model(d / "model.safetensors", [torch.randn(3, 5, generator=g), torch.randn(2, 3, generator=g)], 0.9, 1.0,
               {"data": {"dataset": "digits"}})
    return (d / "model.safetensors").read_bytes()


@FUZZ
@given(ops=mutations, random=st.one_of(st.none(), st.binary(max_size=400)))
def test_mutated_model_files(tmp_path, model_bytes, ops, random):
    path = tmp_path / "model.safetensors"
    path.write_bytes(random if random is not None else _mutate(model_bytes, ops))
    m = _outcome("load_model", load_model, path)
    if m is not None:
        assert all(bool(torch.isfinite(w).all()) for w in m["weights"])
        assert 0 < m["delta"] <= 1 and m["theta"] > 0


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    g = torch.Generator().manual_seed(0)
    X, y = (torch.rand(3, 8, 4, generator=g) < 0.5).float(), torch.arange(8) % 2
    s = ADMMSettings(iterations=1, warmup=0)
    train(X, y, [3], s, out=d, checkpoint_every=1, progress=False)
    from admm_snn.io import fingerprint
    return (d / "checkpoint.safetensors").read_bytes(), s, fingerprint(X, y)


@FUZZ
@given(ops=mutations)
def test_mutated_checkpoints(tmp_path, checkpoint_run, ops):
    from admm_snn.train import load_checkpoint
    data, s, fp = checkpoint_run
    (tmp_path / "checkpoint.safetensors").write_bytes(_mutate(data, ops))
    r = _outcome("load_checkpoint", load_checkpoint, tmp_path, s, [4, 3, 2], fp, "cpu")
    if r is not None:
        assert r.state.iteration >= 0 and all(bool(torch.isfinite(w).all()) for w in r.state.weights)


# ------------------------------------------------------------------------------------------------------
# Settings and a tiny training run
# ------------------------------------------------------------------------------------------------------

bad_numbers = st.sampled_from([0.0, -1.0, float("nan"), float("inf"), float("-inf"), -1e-300])
positive = st.floats(1e-6, 1e6, allow_nan=False)


def _good(name: str, default):
    """A strategy of valid values (over a wide range) for a setting."""
    if name == "delta":
        return st.floats(1e-3, 1.0)
    if name in ("theta", "rho", "beta", "eps", "init_gain", "weight_step"):
        return positive
    if name == "rho_out":
        return st.one_of(st.none(), positive)
    if name == "ridge":
        return st.sampled_from([0.0, 1e-8, 1e-3, 1.0, 1e3])
    if name == "ridge_out":
        return st.sampled_from([None, 0.0, 1e-3, 10.0])
    if name in ("iterations", "warmup"):
        return st.integers(0, 3)
    if name == "reproject":
        return st.integers(0, 2)
    if name == "box_iterations":
        return st.integers(0, 20)
    if name == "chunk_size":
        return st.one_of(st.none(), st.integers(1, 12))
    if name == "seed":
        return st.integers(0, 2**31)
    if name in CHOICES:
        from admm_snn.admm import settings as settings_module
        return st.sampled_from(list(getattr(settings_module, CHOICES[name])))
    if isinstance(default, bool):
        return st.booleans()
    return st.just(default)  # a field added later: its default


def _bad(name: str, default):
    """A strategy of invalid values for a setting (None where there is none)."""
    if name in CHOICES:
        return st.sampled_from(["", "random", "float16", 3])
    if name in ("iterations", "warmup", "reproject", "box_iterations", "chunk_size"):
        return st.sampled_from([-1, 2.5, float("nan")] + ([0] if name == "chunk_size" else []))
    if name == "delta":
        return st.sampled_from([0.0, -0.5, 1.0 + 1e-9, 2.0, float("nan"), float("inf")])
    if name in ("theta", "rho", "beta", "eps", "init_gain", "weight_step", "rho_out"):
        return bad_numbers
    if name in ("ridge", "ridge_out"):
        return st.sampled_from([-1e-3, float("nan"), float("inf")])
    return None


CHOICES = {"schedule": "SCHEDULES", "init": "INITS", "spike_solver": "SPIKE_SOLVERS",
           "output_solve": "OUTPUT_SOLVES", "dtype": "DTYPES", "gram_dtype": "DTYPES",
           "input_format": "INPUT_FORMATS"}


SETTINGS_FIELDS = {f.name: f.default for f in dataclasses.fields(ADMMSettings)}
BAD = {k: _bad(k, v) for k, v in SETTINGS_FIELDS.items() if _bad(k, v) is not None}


@st.composite
def settings_dicts(draw):
    """Valid values for a random subset of the fields; half the time one field gets an invalid value."""
    values = draw(st.fixed_dictionaries({}, optional={k: _good(k, v) for k, v in SETTINGS_FIELDS.items()}))
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(BAD)))
        values[name] = draw(BAD[name])
    return values


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(values=settings_dicts(), T=st.integers(1, 4), N=st.integers(2, 10), n_in=st.integers(1, 6),
       hidden=st.lists(st.integers(1, 5), min_size=0, max_size=2), seed=st.integers(0, 1000),
       use_val=st.booleans())
def test_random_settings_and_tiny_training(values, T, N, n_in, hidden, seed, use_val):
    s = _outcome("ADMMSettings", ADMMSettings, **values)
    if s is None:
        return
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(T, N, n_in, generator=g) < 0.4).float()
    y = torch.randint(0, 3, (N,), generator=g)
    val = ((torch.rand(T, 3, n_in, generator=g) < 0.4).float(), torch.randint(0, 3, (3,), generator=g)) \
        if use_val else None
    r = _outcome("train", train, X, y, hidden, s, val=val, progress=False)
    if r is not None:
        assert len(r.weights) == len(hidden) + 1
        assert all(bool(torch.isfinite(w).all()) for w in r.weights)
        assert all(math.isfinite(h["train_accuracy"]) for h in r.history)
