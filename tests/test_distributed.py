"""Data-parallel ADMM (admm_snn.distributed): 2 Gloo processes on CPU give the single-process result;
a dead or hung worker stops the others with one line within the timeout."""

from __future__ import annotations

import json
import time

import pytest
import torch

from admm_snn import distributed as D
from admm_snn import launch as L
from admm_snn.admm.settings import ADMMSettings
from admm_snn.cli import admm_settings, augment_shift, data_options
from admm_snn.data.augment import ShiftResampler, default_shift
from admm_snn.data.options import load_splits
from admm_snn.io import load_model
from admm_snn.train import accuracy_and_rates, train


@pytest.fixture(scope="module")
def cache_dir(nmnist_root, tmp_path_factory):
    """A framing cache filled once here, so the worker processes read it instead of each framing."""
    from admm_snn.data import FrameSettings, load_nmnist
    cache = tmp_path_factory.mktemp("nmnist-cache")
    load_nmnist(nmnist_root, "train", FrameSettings(10, 10.0, 10.0), cache_dir=cache, limit=80)
    return str(cache)


def _argv(nmnist_root, cache_dir, out, *extra):
    return ["--dataset", "nmnist", "--data-dir", str(nmnist_root), "--cache-dir", cache_dir, "--limit", "80",
            "--time-steps", "10", "--hidden", "16", "--iterations", "5", "--val-fraction", "0.2",
            "--test-fraction", "0.2", "--out", str(out), "--quiet", "--timeout", "60", *extra]


def _env(**kw):
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(D.FAULT_ENV, None)
    env.update(kw)
    return env


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.mark.determinism
@pytest.mark.parametrize("preset", ["default", "paper"])
def test_two_processes_match_one(nmnist_root, cache_dir, tmp_path, capfd, preset, one_thread):
    """default: forward init, parallel schedule; paper: uniform per-sample random init, sequential
    schedule (random orders from the shared generator), dual updates. The reference runs on one torch
    thread, as each rank does (_env): on AVX2 kernels a 2-thread reference differed by 1.28e-5 from the
    2 ranks with N-MNIST's default loss on 3 steps (more float32 readout products per output block)."""
    out = tmp_path / "run"
    # default: the per-iteration report on fixed subsamples (30 of 50 training, 6 of 10 validation
    # samples), drawn over all the data and measured by each rank on its part; paper: on every sample
    report = dict(report_samples=30, val_samples=6) if preset == "default" else dict(report_samples=0, val_samples=0)
    # float64 cross sums: the promise of equality within 1e-5 is made for them (the paper preset sets them);
    # the default float32 ones are held to the measured bound in the realistic-size test below
    argv = _argv(nmnist_root, cache_dir, out, "--preset", preset, "--report-samples", str(report["report_samples"]),
                 "--val-samples", str(report["val_samples"]), "--cross-dtype", "float64", "--augment-shift", "0")
    assert L.launch_local(2, argv, env=_env()) == 0
    printed = capfd.readouterr().out
    assert "2 processes" in printed and "test accuracy" in printed
    # the same run in this process, with train.train
    args = L.build_parser().parse_args(argv)
    args.argv = argv  # --preset paper reads which options were given
    settings = admm_settings(args)
    assert settings.init == ("uniform" if preset == "paper" else "forward") and settings.iterations == 5
    splits = load_splits(data_options(args))
    ref = train(splits.train.time_major(), splits.train.labels, [16], settings, n_classes=10,
                val=(splits.val.time_major(), splits.val.labels), progress=False, **report)
    model = load_model(out)
    assert len(model["weights"]) == 2
    for w_dist, w_ref in zip(model["weights"], ref.weights):
        assert float(w_ref.norm()) > 0
        assert _rel(w_dist, w_ref) < 1e-5
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in hist] == [h["iteration"] for h in ref.history] == [1, 2, 3, 4, 5]
    for h, r in zip(hist, ref.history):
        assert h["train_accuracy"] == pytest.approx(r["train_accuracy"], abs=1e-12)
        assert h["val_accuracy"] == pytest.approx(r["val_accuracy"], abs=1e-12)
        assert h["lagrangian"] == pytest.approx(r["lagrangian"], rel=1e-5)
        assert h["residual_output"] == pytest.approx(r["residual_output"], rel=1e-4, abs=1e-9)
        assert h["firing_rate"] == pytest.approx(r["firing_rate"], rel=1e-6, abs=1e-9)
        assert h["world_size"] == 2 and h["allreduce_bytes"] > 0
        assert h["report_samples"] == r["report_samples"] == (report["report_samples"] or 50)
        assert h["val_samples"] == r["val_samples"] == (report["val_samples"] or 10)
    # the start sums the input Gram (2312² float64); the iterations only the cross sums and small Grams
    assert 2312 * 2312 * 8 > hist[0]["allreduce_bytes"] >= 16 * 2312 * 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"]["bytes"]["weights"] >= 2312 * 2312 * 8 + sum(h["allreduce_bytes"] for h in hist)
    acc, _ = accuracy_and_rates(ref.weights, splits.test.time_major(), splits.test.labels, settings.lif)
    assert summary["test_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert summary["distributed"]["world_size"] == 2 and summary["distributed"]["shard_sizes"] == [25, 25]


@pytest.mark.determinism
def test_two_processes_with_shift_augmentation_match_one(nmnist_root, cache_dir, tmp_path):
    """--augment-shift 1 (16 groups): each rank redraws its shard with the offsets its samples get in one
    process, and sums its groups' moved Grams before the all-reduce: the 1-process weights again (within
    1e-5 where the float32 per-sample products are batch-invariant, :func:`float32_rows_batch_invariant`;
    where not, as with MKL's AVX2 kernels on an Intel Xeon, the shards' products differ at float32
    rounding before any sum and threshold flips amplify it: measured 2e-5 there; tested: within a tenth
    of what the augmentation itself changes)."""
    from admm_snn.data.augment import ShiftResampler
    out = tmp_path / "run"
    argv = _argv(nmnist_root, cache_dir, out, "--cross-dtype", "float64", "--augment-shift", "1")
    assert L.launch_local(2, argv, env=_env()) == 0
    args = L.build_parser().parse_args(argv)
    settings = admm_settings(args)
    splits = load_splits(data_options(args))
    X = splits.train.time_major()
    ref = train(X, splits.train.labels, [16], settings, n_classes=10,
                val=(splits.val.time_major(), splits.val.labels), progress=False,
                resample=ShiftResampler(X, splits.train.sensor_shape, 1, settings.seed))
    plain = train(X, splits.train.labels, [16], settings, n_classes=10,
                  val=(splits.val.time_major(), splits.val.labels), progress=False)
    model = load_model(out)
    exact = float32_rows_batch_invariant()
    for w_dist, w_ref, w_plain in zip(model["weights"], ref.weights, plain.weights):
        effect = _rel(w_plain, w_ref)  # what the augmentation changes
        assert effect > 1e-3
        assert _rel(w_dist, w_ref) < (1e-5 if exact else effect / 10)


@pytest.mark.determinism
def test_single_process_api_with_augmentation_equals_train():
    from admm_snn.data.augment import ShiftResampler
    g = torch.Generator().manual_seed(1)
    X = (torch.rand(6, 20, 2 * 4 * 4, generator=g) < 0.3).float()
    labels = torch.arange(20) % 3
    s = ADMMSettings(iterations=3, dtype="float64")
    for groups in (4, 0):
        r = ShiftResampler(X, (2, 4, 4), 1, seed=2, groups=groups)
        ref = train(X, labels, [5], s, progress=False, resample=r)
        res = D.train_distributed(X, labels, [5], s, resample=r)
        for a, b in zip(res.weights, ref.weights):
            assert torch.equal(a, b)
    with pytest.raises(Exception, match="sharded=False"):
        D.train_distributed(X, labels, [5], s, resample=r, sharded=True)


@pytest.fixture(scope="module")
def cache_dir_400(nmnist_root, tmp_path_factory):
    """A framing cache of 500 recordings (400 for training after the 20% test split), T = 10."""
    from admm_snn.data import FrameSettings, load_nmnist
    cache = tmp_path_factory.mktemp("nmnist-cache-500")
    load_nmnist(nmnist_root, "train", FrameSettings(10, 10.0, 10.0), cache_dir=cache, limit=500)
    return str(cache)


def _realistic_pair(nmnist_root, cache, tmp_path, *extra):
    """The data-parallel run (2 processes, 1 thread each) and the same run in this process (1 thread) on
    400 real recordings, 2312-64-10, T = 10, 5 iterations (the size where rounding differences are
    amplified by threshold flips: 80 recordings and 16 hidden neurons hide them), both with the
    command's default shift augmentation."""
    out = tmp_path / "run"
    argv = ["--dataset", "nmnist", "--data-dir", str(nmnist_root), "--cache-dir", cache, "--limit", "500",
            "--time-steps", "10", "--hidden", "64", "--iterations", "5", "--warmup", "1", "--val-fraction", "0",
            "--out", str(out), "--quiet", "--timeout", "120", *extra]
    assert L.launch_local(2, argv, env=_env()) == 0
    args = L.build_parser().parse_args(argv)
    splits = load_splits(data_options(args), need_test=False)
    assert len(splits.train) == 400
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    X = splits.train.time_major(dtype=splits.train.frames.dtype)
    settings = admm_settings(args)
    shift = augment_shift(args)  # the command's default shift augmentation, as admm-snn train builds it
    shift = default_shift(splits.train.sensor_shape) if shift is None else shift
    assert shift == 1
    resample = ShiftResampler(X, splits.train.sensor_shape, shift, settings.seed) if shift else None
    try:
        ref = train(X, splits.train.labels, [64], settings, n_classes=10, progress=False, resample=resample)
    finally:
        torch.set_num_threads(threads)
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return load_model(out)["weights"], hist, ref


def float32_rows_batch_invariant() -> bool:
    """Whether this machine's float32 matrix product gives a row the same bits whatever the number and
    position of the other rows, at the per-sample products' shapes of the realistic pair (T·shard
    samples × hidden width times the 10-output readout, and times the hidden layer). MKL's AVX-512
    kernels do (measured on AMD EPYC and Intel Xeon); its AVX2 kernels on an Intel Xeon do not (the
    sums inside a row are blocked by the row count), so a shard's products differ from the whole
    batch's at float32 rounding before any cross sum is formed."""
    g = torch.Generator().manual_seed(0)
    for k, n in ((64, 10), (64, 64), (10, 64)):
        A = (torch.rand(4001, k, generator=g) < 0.3).float() * torch.rand(4001, k, generator=g)
        W = torch.randn(n, k, generator=g)
        whole = A @ W.T
        if not (torch.equal(whole[:1333], A[:1333] @ W.T) and torch.equal(whole[1333:], A[1333:] @ W.T)):
            return False
    return True


@pytest.mark.determinism
def test_two_processes_equal_one_at_realistic_size_with_float64_cross_sums(nmnist_root, cache_dir_400, tmp_path):
    """With the cross sums' products in float64 (--cross-dtype float64) every weight sum is the float64
    sum of float32 numbers, whose order changes it by float64 rounding only, below what the float32
    weights can hold: where the per-sample float32 products are batch-invariant
    (:func:`float32_rows_batch_invariant`) the 2-process run gives the 1-process weights (measured: bit
    for bit, 5 seeds at 801 recordings, docs/performance-and-determinism.md) and the same accuracy
    counts every iteration. Where they are not (MKL's AVX2 kernels on an Intel Xeon), the shards'
    products already differ at float32 rounding, threshold flips amplify it as with float32 cross
    sums, and what holds is that test's bound (measured on this data: W_1 0.3% and W_2 4.2% apart
    after 5 iterations; tested: 10%, training accuracy within 2%)."""
    weights, hist, ref = _realistic_pair(nmnist_root, cache_dir_400, tmp_path, "--cross-dtype", "float64")
    if float32_rows_batch_invariant():
        for w_dist, w_ref in zip(weights, ref.weights):
            assert _rel(w_dist, w_ref) < 1e-5
        assert [h["train_accuracy"] for h in hist] == [r["train_accuracy"] for r in ref.history]
        assert [h["firing_rate"] for h in hist] == [r["firing_rate"] for r in ref.history]
    else:
        for w_dist, w_ref in zip(weights, ref.weights):
            assert _rel(w_dist, w_ref) < 0.1
        for h, r in zip(hist, ref.history):
            assert abs(h["train_accuracy"] - r["train_accuracy"]) <= 0.02


@pytest.mark.determinism
def test_two_processes_stay_within_the_measured_bound_with_float32_cross_sums(nmnist_root, cache_dir_400, tmp_path):
    """The default float32 products of the cross sums round differently over different shards (and
    thread counts); the threshold flips of the re-projection amplify it. What holds (measured on 801
    recordings, 5 seeds: weights 1.9-3.0% apart after 5 iterations, training accuracy within 3 of 801
    samples, as between one process on 1 and on 2 threads, without the gated weight targets; with them,
    4 of these 400 samples at one iteration): the weights within 10% and the training accuracy within
    2% (8 of 400 samples) at every iteration. The readout, refitted exactly to the spikes at every
    iteration and small (norm about 0.1), moves most with a flipped spike: with the spike block of the top
    hidden layer solved through Woodbury's identity (64 neurons, 10 outputs) it was 10.0% apart at seed 0
    (the hidden layer 2.4%), so its bound is 15%. The accuracies are compared in samples (a float
    difference of two accuracies 8 of 400 apart rounds to just above 0.02)."""
    weights, hist, ref = _realistic_pair(nmnist_root, cache_dir_400, tmp_path)
    for l, (w_dist, w_ref) in enumerate(zip(weights, ref.weights)):
        assert _rel(w_dist, w_ref) < (0.15 if l == len(weights) - 1 else 0.1)
    for h, r in zip(hist, ref.history):
        assert abs(round(h["train_accuracy"] * 400) - round(r["train_accuracy"] * 400)) <= 8


@pytest.mark.determinism
def test_single_process_api_equals_train():
    g = torch.Generator().manual_seed(1)
    X = (torch.rand(6, 20, 12, generator=g) < 0.3).float()
    labels = torch.arange(20) % 3
    s = ADMMSettings(iterations=3, dtype="float64")
    ref = train(X, labels, [5], s, progress=False)
    res = D.train_distributed(X, labels, [5], s)
    for a, b in zip(res.weights, ref.weights):
        assert torch.equal(a, b)
    assert res.history[-1]["train_accuracy"] == ref.history[-1]["train_accuracy"]


def test_shard_bounds_and_worker_argv():
    assert [D.shard_bounds(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert D.shard_bounds(5, 1, 0) == (0, 5)
    cmd = ["train", "--hidden", "8", "--hidden", "4", "--rho", "0.3", "--quiet", "--nproc", "2", "--dataset",
           "digits", "--limit", "50", "--no-proximal", "--federated", "--nproc=3"]
    assert L.strip_launcher_options(cmd) == cmd[1:8] + cmd[10:-1]
    args = L.build_parser().parse_args(cmd[1:])
    for argv in (L.worker_argv(args), L.strip_launcher_options(cmd)):
        again = L.build_parser().parse_args(argv)
        assert "--nproc" not in argv
        for k in ("hidden", "rho", "quiet", "dataset", "limit", "beta", "iterations", "out", "proximal", "federated"):
            assert getattr(again, k) == getattr(args, k), k


def _run_faulty(nmnist_root, cache_dir, tmp_path, capfd, fault, timeout):
    argv = _argv(nmnist_root, cache_dir, tmp_path / "run")
    argv[argv.index("--timeout") + 1] = str(timeout)
    t0 = time.monotonic()
    rc = L.launch_local(2, argv, env=_env(**{D.FAULT_ENV: fault}), grace_s=3)
    elapsed = time.monotonic() - t0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return rc, elapsed, lines


def test_dead_worker_stops_rank0_with_one_line(nmnist_root, cache_dir, tmp_path, capfd):
    rc, elapsed, lines = _run_faulty(nmnist_root, cache_dir, tmp_path, capfd, "die:1:2", 20)
    assert rc == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("admm-snn: error: rank 0 of 2: all-reduce at iteration 3 failed")
    assert "Traceback" not in lines[0]
    assert elapsed < 20 + 25  # rank 0 notices the broken connection at once, at the latest after the timeout


def test_hung_worker_stops_rank0_within_timeout(nmnist_root, cache_dir, tmp_path, capfd):
    rc, elapsed, lines = _run_faulty(nmnist_root, cache_dir, tmp_path, capfd, "hang:1:2", 6)
    assert rc == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("admm-snn: error: rank 0 of 2: all-reduce at iteration 3 failed: no answer within "
                               "the 6 s timeout")
    assert 6 <= elapsed < 6 + 3 + 25  # timeout, then the launcher's grace before it stops the hung rank


def test_calibration_samples_are_one_global_set_for_any_split(monkeypatch):
    """init_rate calibrates on CALIBRATION_SAMPLES evenly spaced samples of all the data; every split over
    processes sees its part of the same set, and the scale found on it gives the target rate on all."""
    from admm_snn.admm import solver as S
    assert S.calibration_indices(S.CALIBRATION_SAMPLES) is None
    monkeypatch.setattr(S, "CALIBRATION_SAMPLES", 7)
    whole = S.calibration_indices(40)
    assert whole.tolist() == [i * 40 // 7 for i in range(7)]
    for bounds in ([(0, 40)], [(0, 20), (20, 40)], [(0, 13), (13, 14), (14, 40)]):
        parts = [S.calibration_indices(40, b - a, a) + a for a, b in bounds]
        assert torch.equal(torch.cat(parts), whole)
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(8, 400, 30, generator=g) < 0.3).float()
    y = torch.eye(3)[torch.arange(400) % 3]
    s = ADMMSettings(init_rate=0.1)
    monkeypatch.setattr(S, "CALIBRATION_SAMPLES", 100)
    st = S.init_state(X, y, [30, 20, 3], s, torch.Generator().manual_seed(1))
    rate = float(st.spikes[0].mean())
    assert abs(rate - 0.1) < 0.01  # the subsample's scale: the target rate on every sample
    monkeypatch.setattr(S, "CALIBRATION_SAMPLES", 10_000)
    full = S.init_state(X, y, [30, 20, 3], s, torch.Generator().manual_seed(1))
    assert not torch.equal(st.weights[0], full.weights[0])
    assert float((st.weights[0] - full.weights[0]).norm() / full.weights[0].norm()) < 0.05
