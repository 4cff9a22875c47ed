"""IDX image datasets (MNIST, Fashion-MNIST, KMNIST): reading the standard files, the spike codes, the
splits (t10k as the test split, or a held-out fraction), the cache, the command line on them, and bad
files as one-line errors. Small IDX files are written into temporary folders; the real 22,699 MNIST
training images in ``../shared/data/mnist`` are read where present."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from admm_snn.options import DATASETS as CLI_DATASETS
from admm_snn.cli import main
from admm_snn.data import DataOptions, encode_images, load_image_dataset, load_splits, read_idx
from admm_snn.data.options import DATASETS
from admm_snn.errors import DataError, SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST_COUNTS = [2258, 2581, 2215, 2369, 2222, 2010, 2235, 2356, 2163, 2290]
MNIST_SHA256 = {"train-images-idx3-ubyte.gz": "83d9fb42879d4e052efa1295136ec9ce47f46cfe7e35fe9e26407487b7f61488",
                "train-labels-idx1-ubyte.gz": "59d1b48c6c21d598e50635f3fcf85f5fb3c3db0aaee55920c514a77718135624"}


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return head + array.tobytes()


def write_idx(path, array, gz=None):
    data = idx_bytes(array)
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def toy_images(n: int, seed: int, size: int = 6):
    """Learnable toy digits: class c lights row c % size (bright) plus noise; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, c % size, :] = 230
        images[i, :, (c // size) * 3] = 200
    return images, labels.astype(np.uint8)


def make_root(folder, n_train=60, n_test=30, gz=True, test=True, layout=None):
    """A folder with train (and t10k) IDX files; ``layout``: a torchvision folder name (MNIST, ...)."""
    target = folder / layout / "raw" if layout else folder
    target.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    im, lab = toy_images(n_train, 0)
    write_idx(target / f"train-images-idx3-ubyte{ext}", im)
    write_idx(target / f"train-labels-idx1-ubyte{ext}", lab)
    if test:
        im, lab = toy_images(n_test, 1)
        write_idx(target / f"t10k-images-idx3-ubyte{ext}", im)
        write_idx(target / f"t10k-labels-idx1-ubyte{ext}", lab)
    return folder


# ------------------------------------------------------------------------------------------------ reading

def test_cli_dataset_names_match_the_library():
    assert list(DATASETS) == CLI_DATASETS


def test_read_idx_plain_and_gz(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        p = write_idx(tmp_path / f"x-{gz}", a, gz=gz)
        if gz:
            p = p.rename(tmp_path / "x.gz")
        assert np.array_equal(read_idx(p, 3), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l", np.array([3, 1, 4], dtype=np.uint8)), 1), [3, 1, 4])


def test_real_mnist_training_files(shared_data):
    root = shared_data / "mnist"
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST training images not found in {root}")
    for name, digest in MNIST_SHA256.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest
    images = read_idx(root / "train-images-idx3-ubyte.gz", 3)
    labels = read_idx(root / "train-labels-idx1-ubyte.gz", 1)
    assert images.shape == (22699, 28, 28) and labels.shape == (22699,)
    assert np.bincount(labels).tolist() == MNIST_COUNTS
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the official first labels


def test_real_mnist_limit_rate_code_and_cache(shared_data, tmp_path):
    root = shared_data / "mnist"
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST training images not found in {root}")
    opts = DataOptions(dataset="mnist", data_dir=str(root), limit=300, time_steps=8, cache_dir=str(tmp_path))
    s = load_splits(opts)
    assert (s.info["n_train"], s.info["n_val"], s.info["n_test"]) == (180, 60, 60)
    assert s.info["test_source"] == "held-out 20% of training"
    assert s.train.n_inputs == 784 and s.train.sensor_shape == (1, 28, 28) and s.train.frames.dtype == torch.uint8
    assert s.train.name == "mnist-train" and s.train.n_classes == 10
    # spike density ≈ mean intensity of MNIST (about 0.13)
    assert 0.10 < float(s.train.frames.float().mean()) < 0.16
    assert len(list(tmp_path.glob("mnist-train-*.safetensors"))) == 1
    again = load_splits(opts)
    assert torch.equal(again.train.frames, s.train.frames) and torch.equal(again.val.labels, s.val.labels)


def test_torchvision_layout_and_dot_names(tmp_path):
    make_root(tmp_path / "a", layout="FashionMNIST", gz=False)
    ds = load_image_dataset(tmp_path / "a", "train", "fashion-mnist", time_steps=4, cache_dir=tmp_path / "c")
    assert len(ds) == 60 and ds.name == "fashion-mnist-train" and ds.sensor_shape == (1, 6, 6)
    # names with a dot, as some unzip tools write them
    root = tmp_path / "b"
    root.mkdir()
    im, lab = toy_images(20, 0)
    write_idx(root / "train-images.idx3-ubyte", im)
    write_idx(root / "train-labels.idx1-ubyte", lab)
    assert len(load_image_dataset(root, "train", "kmnist", time_steps=4, cache_dir=tmp_path / "c")) == 20


# ------------------------------------------------------------------------------------------------ codes

def test_rate_code_is_seeded_per_image_and_follows_intensity():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4)).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    a = encode_images(images, 400, "rate", seed=3)
    assert a.dtype == torch.uint8 and a.shape == (5, 400, 16)
    assert torch.equal(a, encode_images(images, 400, "rate", seed=3))
    assert not torch.equal(a, encode_images(images, 400, "rate", seed=4))
    assert int(a[0].sum()) == 0 and bool((a[1] == 1).all())
    rate = a.float().mean(1)  # per pixel over 400 steps
    expected = torch.from_numpy(images.reshape(5, 16) / 255.0).float()
    assert float((rate - expected).abs().max()) < 0.1
    # an image's spikes depend on its index in the file, not on which other images are encoded with it
    sub = encode_images(images[[2, 4]], 400, "rate", seed=3, ids=[2, 4])
    assert torch.equal(sub, a[[2, 4]])
    # train and test streams differ
    assert not torch.equal(encode_images(images, 400, "rate", seed=3, stream=1), a)


def test_latency_and_current_codes():
    images = np.array([[[0, 255, 128, 1]]], dtype=np.uint8)
    lat = encode_images(images, 5, "latency")
    assert lat.dtype == torch.uint8 and lat.shape == (1, 5, 4)
    # t = round((1 - I)(T - 1)): I=1 → 0; I=128/255 → round(1.992) = 2; I=1/255 → round(3.98) = 4; 0: none
    assert lat[0].nonzero().tolist() == [[0, 1], [2, 2], [4, 3]]
    cur = encode_images(images, 3, "current")
    assert cur.dtype == torch.float32 and cur.shape == (1, 3, 4)
    assert torch.allclose(cur[0, 2], torch.tensor([0.0, 1.0, 128 / 255, 1 / 255]))
    with pytest.raises(SettingsError):
        encode_images(images, 3, "poisson")


def test_limit_keeps_the_spikes_of_the_full_set(tmp_path):
    make_root(tmp_path / "r")
    full = load_image_dataset(tmp_path / "r", "train", time_steps=5, cache_dir=tmp_path / "c")
    part = load_image_dataset(tmp_path / "r", "train", time_steps=5, limit=25, cache_dir=tmp_path / "c")
    assert len(part) == 25 and part.labels.bincount().tolist() == [3] * 5 + [2] * 5
    # balanced round-robin in file order: labels cycle 0..9, so the first 25 images are kept
    assert torch.equal(part.frames, full.frames[:25])


def test_cache_is_used_and_keyed(tmp_path, monkeypatch):
    make_root(tmp_path / "r")
    kw = dict(time_steps=5, cache_dir=tmp_path / "c")
    a = load_image_dataset(tmp_path / "r", "train", **kw)
    import admm_snn.data.idx as idx

    def boom(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")
    monkeypatch.setattr(idx, "encode_images", boom)
    assert torch.equal(load_image_dataset(tmp_path / "r", "train", **kw).frames, a.frames)
    with pytest.raises(AssertionError):  # another seed is another cache file
        load_image_dataset(tmp_path / "r", "train", seed=1, **kw)
    monkeypatch.undo()
    b = load_image_dataset(tmp_path / "r", "train", encoding="latency", **kw)
    assert not torch.equal(a.frames, b.frames)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 2


# ------------------------------------------------------------------------------------------------ splits

def test_t10k_is_the_test_split(tmp_path):
    make_root(tmp_path / "r", n_train=100, n_test=40)
    opts = DataOptions(dataset="mnist", data_dir=str(tmp_path / "r"), time_steps=4, cache_dir=str(tmp_path / "c"),
                       val_fraction=0.2)
    s = load_splits(opts)
    assert (s.info["n_train"], s.info["n_val"], s.info["n_test"]) == (80, 20, 40)
    assert s.info["test_source"] == "t10k files" and s.test.name == "mnist-test"
    # the train/val split is the same whether or not the test set is loaded
    s2 = load_splits(opts, need_test=False)
    assert s2.test is None and torch.equal(s2.val.frames, s.val.frames)
    # without t10k: a held-out fraction
    make_root(tmp_path / "n", n_train=100, test=False)
    s3 = load_splits(DataOptions(dataset="mnist", data_dir=str(tmp_path / "n"), time_steps=4,
                                 cache_dir=str(tmp_path / "c"), test_fraction=0.3, val_fraction=0.2))
    assert (s3.info["n_train"], s3.info["n_val"], s3.info["n_test"]) == (50, 20, 30)


def test_options_refuse_what_images_cannot_do():
    with pytest.raises(SettingsError, match="needs --data-dir"):
        DataOptions(dataset="mnist")
    with pytest.raises(SettingsError, match="N-MNIST only"):
        DataOptions(dataset="mnist", data_dir="x", download=True)
    with pytest.raises(SettingsError, match="encoding"):
        DataOptions(dataset="mnist", data_dir="x", encoding="poisson")


def test_cli_train_and_eval_on_idx_files(tmp_path, capsys):
    root = make_root(tmp_path / "r", n_train=100, n_test=40)
    out = tmp_path / "run"
    data = ["--dataset", "mnist", "--data-dir", str(root), "--time-steps", "6", "--cache-dir", str(tmp_path / "c")]
    assert main(["train", *data, "--hidden", "16", "--iterations", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "80 train, 20 val, 40 test (t10k files)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", "--model", str(out), "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_samples"] == 40 and report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert main(["eval", "--model", str(out), "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = summary["best_iteration"]
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert report["accuracy"] == pytest.approx(next(h["val_accuracy"] for h in hist if h["iteration"] == best))
    # the current code trains too (float frames)
    assert main(["train", *data, "--encoding", "current", "--hidden", "8", "--iterations", "1",
                 "--out", str(tmp_path / "cur"), "--quiet"]) == 0


# ------------------------------------------------------------------------------------------------ bad files

def _bad_roots(base):
    good = make_root(base / "good", n_train=30, n_test=20)
    roots = {}

    def variant(name, change):
        root = base / name
        shutil.copytree(good, root)
        change(root)
        roots[name] = root

    def truncate_gz(root):
        p = root / "train-images-idx3-ubyte.gz"
        p.write_bytes(p.read_bytes()[:-40])

    def magic(root):  # a label file where the images should be
        shutil.copyfile(root / "train-labels-idx1-ubyte.gz", root / "train-images-idx3-ubyte.gz")

    def counts(root):
        write_idx(root / "train-labels-idx1-ubyte.gz", toy_images(29, 0)[1])

    def short_data(root):
        data = idx_bytes(toy_images(30, 0)[0])[:-7]
        (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))

    def no_labels(root):
        (root / "train-labels-idx1-ubyte.gz").unlink()

    def no_t10k_labels(root):
        (root / "t10k-labels-idx1-ubyte.gz").unlink()

    def bad_label(root):
        lab = toy_images(30, 0)[1]
        lab[7] = 12
        write_idx(root / "train-labels-idx1-ubyte.gz", lab)

    def not_gzip(root):
        (root / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")

    def test_size(root):
        write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((20, 5, 5), np.uint8))
        write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(20, np.uint8))

    for name, change in [("truncated gz", truncate_gz), ("wrong magic", magic), ("count mismatch", counts),
                         ("short data", short_data), ("no labels", no_labels), ("no t10k labels", no_t10k_labels),
                         ("label 12", bad_label), ("not gzip", not_gzip), ("test of another size", test_size)]:
        variant(name, change)
    roots["empty"] = base / "empty"
    roots["empty"].mkdir()
    roots["missing"] = base / "missing"
    return roots


BAD = {
    "truncated gz": ["train-images-idx3-ubyte.gz", "cannot be decompressed", "truncated"],
    "wrong magic": ["train-images-idx3-ubyte.gz", "magic number 00 00 08 01", "00 00 08 03"],
    "count mismatch": ["30 images", "29 labels", "train-labels-idx1-ubyte.gz"],
    "short data": ["train-images-idx3-ubyte.gz", "truncated"],
    "no labels": ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte[.gz] is missing"],
    "no t10k labels": ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte[.gz] is missing"],
    "label 12": ["train-labels-idx1-ubyte.gz", "label 12 of image 7"],
    "not gzip": ["train-images-idx3-ubyte.gz", "gzip"],
    "test of another size": ["t10k-images-idx3-ubyte.gz", "5x5", "6x6"],
    "empty": ["no mnist train files", "train-images-idx3-ubyte[.gz]", "holds nothing"],
    "missing": ["missing", "does not exist"],
}


@pytest.fixture(scope="module")
def bad_roots(tmp_path_factory):
    return _bad_roots(tmp_path_factory.mktemp("idx-bad"))


@pytest.mark.parametrize("name", list(BAD))
def test_bad_files_are_one_line_errors(bad_roots, name, capfd, tmp_path):
    rc = main(["train", "--dataset", "mnist", "--data-dir", str(bad_roots[name]), "--time-steps", "3",
               "--iterations", "1", "--hidden", "4", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
               "--quiet"])
    err = capfd.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("admm-snn: error: ") and "Traceback" not in err, err
    for w in BAD[name]:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


def test_read_idx_names_the_file(tmp_path):
    p = tmp_path / "labels.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02"))
    with pytest.raises(DataError, match="labels.gz.*5 bytes.*holds 2"):
        read_idx(p, 1)


def test_bad_file_in_a_real_subprocess(bad_roots, tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "admm_snn.cli", "train", "--dataset", "mnist", "--data-dir",
                        str(bad_roots["count mismatch"]), "--cache-dir", str(tmp_path / "c"), "--out",
                        str(tmp_path / "o"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("admm-snn: error: ") and "29 labels" in p.stderr
