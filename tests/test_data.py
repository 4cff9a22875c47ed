"""Tests of admm_snn.data: N-MNIST reading/scanning/framing/caching, digits, splits."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tonic
from hypothesis import given, settings as hsettings, strategies as st

import admm_snn.data.nmnist as nmnist_mod
from admm_snn.data import (
    NMNIST_DTYPE,
    FrameSettings,
    SpikeDataset,
    default_cache_dir,
    denoise_events,
    events_to_frames,
    limit_files,
    load_digits,
    load_nmnist,
    read_nmnist_file,
    scan_nmnist_folder,
    stratified_split,
)
from admm_snn.errors import DataError, SettingsError

DIGIT_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]


# ----------------------------------------------------------------------------------------- helpers
def encode_events(rows) -> bytes:
    """N-MNIST bytes for (x, y, t, p) rows (no range checks: used to write corrupt files too)."""
    out = bytearray()
    for x, y, t, p in rows:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def make_events(rows) -> np.ndarray:
    ev = np.zeros(len(rows), dtype=NMNIST_DTYPE)
    for i, (x, y, t, p) in enumerate(rows):
        ev[i] = (x, y, t, p)
    return ev


def assert_one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def fake_layout(root: Path, nmnist_root: Path, per_digit=2, split="Train") -> Path:
    """A small N-MNIST layout under ``root`` made of copies of real recordings."""
    src = scan_nmnist_folder(nmnist_root)
    taken = {d: 0 for d in range(10)}
    for path, d in src:
        if taken[d] < per_digit:
            dest = root / split / str(d) / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            taken[d] += 1
    return root


# ------------------------------------------------------------------------------------ reading files
def test_read_real_files_match_manifest(nmnist_root, nmnist_manifest):
    rows = nmnist_manifest[:: max(1, len(nmnist_manifest) // 6)]
    for row in rows:
        path = nmnist_root / row["path"]
        ev = read_nmnist_file(path)
        assert ev.dtype == NMNIST_DTYPE == tonic.datasets.NMNIST.dtype
        assert len(ev) == int(row["n_events"])
        assert path.stat().st_size == int(row["bytes"]) == 5 * len(ev)
        assert (ev["x"].min(), ev["x"].max()) == (int(row["x_min"]), int(row["x_max"]))
        assert (ev["y"].min(), ev["y"].max()) == (int(row["y_min"]), int(row["y_max"]))
        assert (ev["t"].min(), ev["t"].max()) == (int(row["t_min_us"]), int(row["t_max_us"]))
        assert ev["p"].mean() == pytest.approx(float(row["on_fraction"]), abs=1e-4)
        # identical to tonic's own reader
        ref = tonic.io.read_mnist_file(str(path), dtype=NMNIST_DTYPE)
        assert np.array_equal(ev, ref)


def test_read_unlabelled_sample(nmnist_root):
    ev = read_nmnist_file(nmnist_root / "unlabelled_sample.bin")
    assert len(ev) == 4325
    assert np.all(np.diff(ev["t"]) >= 0)


def test_read_overflow_marker_like_tonic(tmp_path):
    # y == 240 rows are ATIS timestamp-overflow markers: tonic drops them and adds 2**13 us afterwards.
    path = tmp_path / "overflow.bin"
    path.write_bytes(encode_events([(1, 2, 100, 1), (0, 240, 0, 0), (3, 4, 50, 0)]))
    ev = read_nmnist_file(path)
    ref = tonic.io.read_mnist_file(str(path), dtype=NMNIST_DTYPE)
    assert np.array_equal(ev, ref)
    assert ev["t"].tolist() == [100, 50 + 2**13]


@pytest.mark.parametrize(
    "case",
    ["truncated", "x_out_of_range", "y_out_of_range", "decreasing_t", "empty", "missing", "folder"],
)
def test_corrupt_files_raise_one_line(tmp_path, case):
    good = [(1, 2, 10, 1), (3, 4, 20, 0), (5, 6, 30, 1), (7, 8, 40, 0)]
    path = tmp_path / f"{case}.bin"
    needles = [path.name]
    if case == "truncated":
        path.write_bytes(encode_events(good)[:-2])
        needles += ["18 bytes", "multiple of 5"]
    elif case == "x_out_of_range":
        rows = list(good)
        rows[2] = (40, 6, 30, 1)
        path.write_bytes(encode_events(rows))
        needles += ["event 2", "x=40"]
    elif case == "y_out_of_range":
        rows = list(good)
        rows[1] = (3, 34, 20, 0)
        path.write_bytes(encode_events(rows))
        needles += ["event 1", "y=34"]
    elif case == "decreasing_t":
        rows = list(good)
        rows[3] = (7, 8, 5, 0)
        path.write_bytes(encode_events(rows))
        needles += ["event 3", "t=5"]
    elif case == "empty":
        path.write_bytes(b"")
        needles += ["empty"]
    elif case == "missing":
        needles += ["does not exist"]
    elif case == "folder":
        path.mkdir()
        needles += ["folder"]
    with pytest.raises(DataError) as exc_info:
        read_nmnist_file(path)
    assert_one_line(exc_info, *needles)


# ----------------------------------------------------------------------------------------- scanning
def test_scan_real_folder(nmnist_root):
    files = scan_nmnist_folder(nmnist_root, "train")
    assert len(files) == 1000
    labels = [d for _, d in files]
    assert [labels.count(d) for d in range(10)] == DIGIT_COUNTS
    assert all(p.parent.name == str(d) and p.suffix == ".bin" for p, d in files)
    assert files == sorted(files, key=lambda f: (f[1], f[0].name))
    assert scan_nmnist_folder(str(nmnist_root), "TRAIN") == files  # str root, case-insensitive split


def test_scan_real_folder_has_no_test(nmnist_root):
    with pytest.raises(DataError) as exc_info:
        scan_nmnist_folder(nmnist_root, "test")
    assert_one_line(exc_info, "no Test folder", "only has Train")


def test_scan_folder_errors(tmp_path):
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(tmp_path / "nowhere")
    assert_one_line(e, "nowhere", "does not exist")

    only_test = tmp_path / "only_test"
    for d in range(10):
        (only_test / "Test" / str(d)).mkdir(parents=True)
        (only_test / "Test" / str(d) / "00001.bin").write_bytes(encode_events([(1, 1, 1, 1)]))
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(only_test, "train")
    assert_one_line(e, "no Train folder", "only has Test")
    assert len(scan_nmnist_folder(only_test, "test")) == 10

    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(plain)
    assert_one_line(e, "plain", "no Train or Test", "images/")

    not_nmnist = tmp_path / "not_nmnist"
    (not_nmnist / "Train" / "cats").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(not_nmnist)
    assert_one_line(e, "not N-MNIST-like", "cats/")

    some_digits = tmp_path / "some_digits"
    for d in range(5):
        (some_digits / "Train" / str(d)).mkdir(parents=True)
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(some_digits)
    assert_one_line(e, "lacks digit subfolder(s) 5, 6, 7, 8, 9")

    empty_digit = tmp_path / "empty_digit"
    for d in range(10):
        (empty_digit / "Train" / str(d)).mkdir(parents=True)
        if d != 7:
            (empty_digit / "Train" / str(d) / "00001.bin").write_bytes(encode_events([(1, 1, 1, 1)]))
    (empty_digit / "Train" / "7" / "notes.txt").write_text("not a recording")
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(empty_digit)
    assert_one_line(e, str(Path("Train") / "7"), "no .bin")

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DataError) as e:
        scan_nmnist_folder(a_file)
    assert_one_line(e, "a_file", "is a file")

    with pytest.raises(SettingsError):
        scan_nmnist_folder(tmp_path, "validation")


def test_limit_files_is_balanced_and_deterministic(nmnist_root):
    files = scan_nmnist_folder(nmnist_root)
    chosen = limit_files(files, 55)
    labels = [d for _, d in chosen]
    assert [labels.count(d) for d in range(10)] == [6] * 5 + [5] * 5
    assert chosen == limit_files(files, 55)
    per_digit = {d: [p for p, dd in files if dd == d] for d in range(10)}
    assert all(p in per_digit[d][:6] for p, d in chosen)
    assert limit_files(files, 5000) == files
    # a digit that runs out leaves its share to the others
    small = [(Path(f"{d}_{i}"), d) for d in range(3) for i in range(1 if d == 0 else 10)]
    assert [d for _, d in limit_files(small, 9)].count(0) == 1 and len(limit_files(small, 9)) == 9


# ------------------------------------------------------------------------------------------ framing
def test_frame_settings_validation_and_key():
    for bad in (dict(time_steps=0), dict(time_steps=2.5), dict(time_steps=True), dict(bin_ms=0),
                dict(bin_ms=-1.0), dict(bin_ms=float("nan")), dict(denoise_ms=-1), dict(denoise_ms=float("inf")),
                dict(binary="yes")):
        with pytest.raises(SettingsError) as e:
            FrameSettings(**bad)
        assert_one_line(e, next(iter(bad)))
    k = FrameSettings().key()
    assert k == FrameSettings(30, 10, 10, True).key() and len(k) == 12
    assert FrameSettings(denoise_ms=None).key() == FrameSettings(denoise_ms=0).key()
    keys = {FrameSettings().key(), FrameSettings(time_steps=31).key(), FrameSettings(bin_ms=5).key(),
            FrameSettings(denoise_ms=None).key(), FrameSettings(binary=False).key()}
    assert len(keys) == 5


def test_events_to_frames_hand_computed():
    # bins of 10 ms starting at the first event (t=0); tonic drops the trailing incomplete bin,
    # so the event at 31 ms (beyond the 3 complete bins 0-10-20-30 ms) does not appear.
    rows = [
        (0, 0, 0, 1),       # bin 0, ON, pixel (y0, x0)
        (0, 0, 100, 1),     # same pixel, same bin: count 2, spike 1
        (1, 2, 9999, 0),    # bin 0, OFF, (y2, x1)
        (3, 4, 10000, 1),   # bin 1
        (5, 6, 25000, 0),   # bin 2
        (33, 33, 31000, 1),  # last event: in the incomplete bin 3 -> dropped
    ]
    ev = make_events(rows)
    s = FrameSettings(time_steps=5, bin_ms=10, denoise_ms=None)
    fr = events_to_frames(ev, s)
    assert fr.shape == (5, 2312) and fr.dtype == np.uint8
    assert set(np.unique(fr)) <= {0, 1}

    def idx(p, y, x):
        return p * 34 * 34 + y * 34 + x

    expected = np.zeros((5, 2312), dtype=np.uint8)
    expected[0, idx(1, 0, 0)] = 1
    expected[0, idx(0, 2, 1)] = 1
    expected[1, idx(1, 4, 3)] = 1
    expected[2, idx(0, 6, 5)] = 1
    assert np.array_equal(fr, expected)
    assert np.count_nonzero(fr) == 4

    counts = events_to_frames(ev, FrameSettings(time_steps=5, bin_ms=10, denoise_ms=None, binary=False))
    assert counts.dtype == np.float32 and counts[0, idx(1, 0, 0)] == 2 and counts.sum() == 5

    short = events_to_frames(ev, FrameSettings(time_steps=2, bin_ms=10, denoise_ms=None))
    assert np.array_equal(short, expected[:2])

    empty = events_to_frames(ev[:0], s)
    assert empty.shape == (5, 2312) and not empty.any()


def test_events_to_frames_rejects_bad_events():
    s = FrameSettings(denoise_ms=None)
    with pytest.raises(DataError) as e:
        events_to_frames(make_events([(0, 0, 0, 1), (34, 0, 5, 1)]), s)
    assert_one_line(e, "event 1", "x=34")
    with pytest.raises(DataError) as e:
        events_to_frames(make_events([(0, 0, 10, 1), (1, 0, 5, 1)]), s)
    assert_one_line(e, "event 1", "t=5")
    uev = np.zeros(2, dtype=[("x", np.uint16), ("y", np.uint16), ("t", np.uint64), ("p", np.uint8)])
    uev["t"] = [10, 5]  # unsigned: a naive np.diff would wrap around and miss this
    with pytest.raises(DataError) as e:
        events_to_frames(uev, s)
    assert_one_line(e, "event 1", "t=5")
    with pytest.raises(DataError) as e:
        events_to_frames(np.zeros(3, dtype=[("x", int), ("y", int)]), s)
    assert_one_line(e, "t, p")
    fev = np.zeros(2, dtype=[("x", int), ("y", int), ("t", float), ("p", int)])
    fev["t"] = [0.0, np.nan]
    with pytest.raises(DataError) as e:
        events_to_frames(fev, s)
    assert_one_line(e, "non-finite")


def test_events_to_frames_real_file(nmnist_root):
    path, _ = scan_nmnist_folder(nmnist_root)[0]
    ev = read_nmnist_file(path)
    fr = events_to_frames(ev, FrameSettings())
    assert fr.shape == (30, 2312) and fr.dtype == np.uint8 and set(np.unique(fr)) <= {0, 1}
    # same as running tonic's own transforms
    den = tonic.transforms.Denoise(filter_time=10000)(ev)
    ref = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=10000)(den).reshape(-1, 2312)[:30]
    expected = np.zeros((30, 2312), dtype=np.uint8)
    expected[: len(ref)] = ref > 0
    assert np.array_equal(fr, expected)
    nodenoise = events_to_frames(ev, FrameSettings(denoise_ms=None))
    assert np.count_nonzero(nodenoise) >= np.count_nonzero(fr)


def test_denoise_matches_tonic_on_real_files(nmnist_root):
    for path, _ in scan_nmnist_folder(nmnist_root)[::250]:
        ev = read_nmnist_file(path)
        for ft in (1000.0, 10000.0):
            assert np.array_equal(denoise_events(ev, ft), tonic.functional.denoise_numpy(ev, filter_time=ft))


@hsettings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 40), st.integers(0, 1)),
             min_size=1, max_size=40),
    st.sampled_from([1, 5, 10, 25.5]),
)
def test_denoise_matches_tonic_random(rows, filter_time):
    rows = sorted(rows, key=lambda r: r[2])  # non-decreasing timestamps, ties in any order
    ev = make_events(rows)
    assert np.array_equal(denoise_events(ev, filter_time), tonic.functional.denoise_numpy(ev, filter_time))


# ---------------------------------------------------------------------------------- loading + cache
def test_load_nmnist_limit_and_cache(nmnist_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    s = FrameSettings(time_steps=20)
    ds = load_nmnist(nmnist_root, "train", settings=s, cache_dir=cache, limit=50)
    assert isinstance(ds, SpikeDataset) and len(ds) == 50 and ds.name == "nmnist-train"
    assert ds.frames.shape == (50, 20, 2312) and ds.frames.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels.bincount().tolist() == [5] * 10
    assert ds.sensor_shape == (2, 34, 34) and ds.n_classes == 10
    assert int(ds.frames.max()) == 1 and ds.frames.float().mean() > 0.005
    cache_files = list(cache.glob("*.safetensors"))
    assert len(cache_files) == 1 and s.key() in cache_files[0].name
    assert not list(cache.glob("*.tmp"))

    # second call: served from the cache without reading any event file
    def boom(path):
        raise AssertionError(f"read {path} despite the cache")

    monkeypatch.setattr(nmnist_mod, "read_nmnist_file", boom)
    again = load_nmnist(nmnist_root, "train", settings=s, cache_dir=cache, limit=50)
    assert torch.equal(again.frames, ds.frames) and torch.equal(again.labels, ds.labels)

    # corrupt cache files are ignored (with a warning) and rebuilt
    monkeypatch.undo()
    for garbage in (b"not a safetensors file", cache_files[0].read_bytes()[:100]):
        cache_files[0].write_bytes(garbage)
        with pytest.warns(RuntimeWarning, match="unreadable cache"):
            rebuilt = load_nmnist(nmnist_root, "train", settings=s, cache_dir=cache, limit=50)
        assert torch.equal(rebuilt.frames, ds.frames) and torch.equal(rebuilt.labels, ds.labels)
    monkeypatch.setattr(nmnist_mod, "read_nmnist_file", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_nmnist(nmnist_root, settings=s, cache_dir=cache, limit=50).frames, ds.frames)


def test_load_nmnist_cache_keys(nmnist_root, tmp_path):
    cache = tmp_path / "cache"
    root = fake_layout(tmp_path / "data", nmnist_root, per_digit=2)
    a = load_nmnist(root, settings=FrameSettings(time_steps=10), cache_dir=cache)
    b = load_nmnist(root, settings=FrameSettings(time_steps=10, binary=False), cache_dir=cache)
    assert b.frames.dtype == torch.float32 and torch.equal(a.frames, (b.frames > 0).to(torch.uint8))
    assert len(list(cache.glob("*.safetensors"))) == 2
    # changing a data file (size/mtime) changes the fingerprint: the new content is read and framed
    victim = sorted((root / "Train" / "3").glob("*.bin"))[0]
    victim.write_bytes(encode_events([(1, 1, 0, 1), (2, 1, 5, 1)]))
    c = load_nmnist(root, settings=FrameSettings(time_steps=10), cache_dir=cache)
    k = int(torch.nonzero(c.labels == 3)[0])
    assert int(c.frames[k].sum()) == 2 and not torch.equal(c.frames[k], a.frames[k])
    assert torch.equal(c.frames[k + 1 :], a.frames[k + 1 :])
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_load_nmnist_unwritable_cache_still_loads(nmnist_root, tmp_path):
    blocker = tmp_path / "file_not_folder"
    blocker.write_text("x")
    root = fake_layout(tmp_path / "data", nmnist_root, per_digit=1)
    with pytest.warns(RuntimeWarning, match="could not write cache"):
        ds = load_nmnist(root, settings=FrameSettings(time_steps=5), cache_dir=blocker / "sub")
    assert len(ds) == 10


def test_load_nmnist_folder_errors(nmnist_root, tmp_path):
    with pytest.raises(DataError) as e:
        load_nmnist(nmnist_root, "test", cache_dir=tmp_path)
    assert_one_line(e, "no Test folder", "only has Train", "--download")
    with pytest.raises(DataError) as e:
        load_nmnist(tmp_path / "missing", cache_dir=tmp_path)
    assert_one_line(e, "missing", "--download")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError) as e:
        load_nmnist(tmp_path / "plain", cache_dir=tmp_path)
    assert_one_line(e, "plain", "Train", "--download")
    with pytest.raises(SettingsError):
        load_nmnist(nmnist_root, limit=0, cache_dir=tmp_path)


def test_load_nmnist_names_corrupt_file(nmnist_root, tmp_path):
    root = fake_layout(tmp_path / "data", nmnist_root, per_digit=1)
    bad = next((root / "Train" / "4").glob("*.bin"))
    data = bytearray(bad.read_bytes())
    data[5 * 7] = 40  # x of event 7
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_nmnist(root, cache_dir=tmp_path / "cache")
    assert_one_line(e, bad.name, "event 7", "x=40")


def test_load_nmnist_download_path(nmnist_root, tmp_path, monkeypatch):
    calls = []

    class FakeNMNIST:  # stands in for tonic.datasets.NMNIST: "downloads" into save_to/NMNIST
        def __init__(self, save_to, train=True):
            calls.append((save_to, train))
            self.location_on_system = os.path.join(save_to, "NMNIST")
            fake_layout(Path(self.location_on_system), nmnist_root, per_digit=1,
                        split="Train" if train else "Test")

    monkeypatch.setattr(tonic.datasets, "NMNIST", FakeNMNIST)
    root = tmp_path / "dl"
    ds = load_nmnist(root, "test", cache_dir=tmp_path / "cache", download=True)
    assert len(ds) == 10 and ds.name == "nmnist-test" and calls == [(str(root), False)]
    # once there, it is found without downloading again (root or root/NMNIST both work)
    ds2 = load_nmnist(root, "test", cache_dir=tmp_path / "cache", download=True)
    assert torch.equal(ds.frames, ds2.frames) and len(calls) == 1

    class OfflineNMNIST:
        def __init__(self, save_to, train=True):
            raise OSError("Name or service not known")

    monkeypatch.setattr(tonic.datasets, "NMNIST", OfflineNMNIST)
    with pytest.raises(DataError) as e:
        load_nmnist(tmp_path / "offline", cache_dir=tmp_path / "cache", download=True)
    assert_one_line(e, "could not download", "offline", "Name or service not known")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ADMM_SNN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ADMM_SNN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "admm-snn"


# ------------------------------------------------------------------------------------------ dataset
def test_spike_dataset_subset_and_time_major():
    frames = torch.randint(0, 2, (6, 4, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ds = SpikeDataset(frames, labels, "toy", 3, (2, 2, 2))
    assert len(ds) == 6 and ds.time_steps == 4 and ds.n_inputs == 8
    sub = ds.subset(torch.tensor([4, 1]))
    assert torch.equal(sub.frames, frames[[4, 1]]) and sub.labels.tolist() == [1, 1]
    assert len(ds.subset([])) == 0 and len(ds.subset(slice(0, 3))) == 3
    assert ds.subset(labels == 2).labels.tolist() == [2, 2]
    tm = ds.time_major()
    assert tm.shape == (4, 6, 8) and tm.dtype == torch.float32 and tm.is_contiguous()
    assert torch.equal(tm[2, 5], frames[5, 2].float())
    with pytest.raises(DataError):
        ds.subset([6])
    with pytest.raises(DataError):
        SpikeDataset(frames, labels[:5], "toy", 3, (2, 2, 2))
    with pytest.raises(DataError):
        SpikeDataset(frames, labels, "toy", 3, (1, 2, 2))
    with pytest.raises(DataError):
        SpikeDataset(frames, labels, "toy", 2, (2, 2, 2))


# ------------------------------------------------------------------------------------------- digits
def test_load_digits_rate():
    ds = load_digits(time_steps=20, encoding="rate", seed=0)
    assert ds.frames.shape == (1797, 20, 64) and ds.frames.dtype == torch.uint8
    assert set(ds.frames.unique().tolist()) <= {0, 1}
    assert ds.name == "digits" and ds.sensor_shape == (1, 8, 8) and ds.n_classes == 10
    assert ds.labels.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    again = load_digits(time_steps=20, encoding="rate", seed=0)
    assert torch.equal(ds.frames, again.frames)
    assert not torch.equal(ds.frames, load_digits(time_steps=20, encoding="rate", seed=1).frames)
    from sklearn.datasets import load_digits as sk

    intensity = torch.as_tensor(sk().data, dtype=torch.float32) / 16
    rate = ds.frames.float().mean(1)  # (N, 64)
    assert torch.all(rate[intensity == 0] == 0) and torch.all(rate[intensity == 1] == 1)
    assert abs(rate.mean() - intensity.mean()) < 0.005
    assert (rate - intensity).abs().mean() < 0.1  # per-pixel estimate from 20 draws
    assert torch.corrcoef(torch.stack([rate.flatten(), intensity.flatten()]))[0, 1] > 0.9


def test_load_digits_latency():
    T = 11
    ds = load_digits(time_steps=T, encoding="latency")
    from sklearn.datasets import load_digits as sk

    intensity = torch.as_tensor(sk().data, dtype=torch.float32) / 16
    counts = ds.frames.sum(1)
    assert torch.equal(counts, (intensity > 0).to(torch.uint8))
    first = ds.frames.float().argmax(1)
    on = intensity > 0
    assert torch.equal(first[on], torch.round((1 - intensity[on]) * (T - 1)).long())
    assert torch.all(first[intensity == 1] == 0)
    assert torch.equal(ds.frames, load_digits(time_steps=T, encoding="latency", seed=5).frames)
    with pytest.raises(SettingsError):
        load_digits(encoding="poisson")
    with pytest.raises(SettingsError):
        load_digits(time_steps=0)


# -------------------------------------------------------------------------------------------- split
def test_stratified_split():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 7, (1003,), generator=gen)
    fractions = (0.7, 0.2, 0.1)
    parts = stratified_split(labels, fractions, seed=11)
    assert len(parts) == 3
    allidx = torch.cat(parts)
    assert allidx.numel() == 1003 and torch.equal(allidx.sort().values, torch.arange(1003))
    for p, f in zip(parts, fractions):
        assert p.dtype == torch.int64 and torch.equal(p, p.sort().values)
        for c in range(7):
            n_c = int((labels == c).sum())
            assert abs(int((labels[p] == c).sum()) - f * n_c) <= 1
    again = stratified_split(labels.numpy(), list(fractions), seed=11)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    other = stratified_split(labels, fractions, seed=12)
    assert not torch.equal(parts[0], other[0])
    assert [p.numel() for p in stratified_split([0, 0, 1], [1.0], 0)] == [3]
    for bad in ([0.5, 0.4], [1.2, -0.2], [], [float("nan"), 1.0]):
        with pytest.raises(SettingsError):
            stratified_split(labels, bad, 0)
