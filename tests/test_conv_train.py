"""fit_conv (conv_train.py): the conv ADMM trainer's entry point on real MNIST, its history, its
determinism and its one-line errors."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import conv_solver as CS
from admm_snn.admm.settings import ADMMSettings
from admm_snn.conv_train import fit_conv
from admm_snn.errors import SettingsError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_conv_learns_on_mnist_and_reports_each_iteration(shared_data, tmp_path):
    from admm_snn.data.idx import load_image_dataset
    ds = load_image_dataset(shared_data / "mnist", "train", time_steps=6, limit=600, cache_dir=tmp_path)
    X, lab = ds.time_major(), ds.labels
    images = X.reshape(X.shape[0], X.shape[1], 1, 28, 28)  # frames as images are accepted too
    res = fit_conv(images[:, :300], lab[:300], "4c7s3", (1, 28, 28), ADMMSettings(grow_every=0), 2,
                   val=(X[:, 300:], lab[300:]))
    assert [m["iteration"] for m in res.history] == [0, 1, 2]
    assert {"train_accuracy", "val_accuracy", "firing_rate", "seconds", "cg"} <= set(res.history[-1])
    assert res.history[-1]["train_accuracy"] > 0.5 and res.history[-1]["val_accuracy"] > 0.5  # chance 0.1
    # the reported accuracies are those of the returned weights; the best weights are the best val's
    final = float((CS.predict(res.weights, X[:, :300], res.problem, ADMMSettings()) == lab[:300]).float().mean())
    assert final == pytest.approx(res.history[-1]["train_accuracy"])
    best = max(m["val_accuracy"] for m in res.history)
    got = float((CS.predict(res.best_weights, X[:, 300:], res.problem, ADMMSettings()) == lab[300:]).float().mean())
    assert got == pytest.approx(best)


def test_fit_conv_is_deterministic_given_the_seed():
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(5, 40, 2 * 8 * 8, generator=g) < 0.3).float()
    labels = torch.arange(40) % 3
    runs = [fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(seed=s, grow_every=0), 2) for s in (4, 4, 5)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].weights, runs[1].weights))
    assert runs[0].history[-1]["train_accuracy"] == runs[1].history[-1]["train_accuracy"]
    assert not torch.equal(runs[0].weights[0], runs[2].weights[0])


def test_every_conv_layer_trains_from_the_first_iteration():
    """grow_every is for dense networks (deep layers that start as identity copies): a conv network starts
    every layer at random, so growth would only freeze random layers. With growth on (the default 4) the
    run is bitwise the run without it, and after one iteration every hidden layer has moved."""
    g = torch.Generator().manual_seed(1)
    frames = (torch.rand(5, 40, 2 * 8 * 8, generator=g) < 0.3).float()
    labels = torch.arange(40) % 3
    start = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(seed=2), 0).weights
    grow, none = (fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(seed=2, grow_every=K), 1)
                  for K in (4, 0))
    assert all(torch.equal(a, b) for a, b in zip(grow.weights, none.weights))
    assert all(not torch.equal(a, b) for a, b in zip(grow.weights[:2], start[:2]))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(labels=torch.zeros(3, dtype=torch.long)), "labels have shape"),
    (dict(iterations=-1), "iterations"),
    (dict(arch="4c9"), "kernel 9"),
    (dict(input_shape=(1, 8, 8)), "frames have shape"),
    (dict(settings=ADMMSettings(schedule="sequential")), "schedule"),
])
def test_fit_conv_bad_input_is_a_one_line_error(kwargs, needle):
    args = dict(frames=torch.zeros(4, 10, 2 * 8 * 8), labels=torch.arange(10) % 2, arch="3c3", input_shape=(2, 8, 8),
                settings=ADMMSettings(), iterations=1)
    args.update(kwargs)
    with pytest.raises(SettingsError) as e:
        fit_conv(**args)
    assert "\n" not in str(e.value) and needle in str(e.value)


def test_a_conv_run_that_cannot_fit_stops_before_it_starts(monkeypatch):
    """fit_conv estimates its memory (resources.estimate_conv_memory) and refuses, in one line naming the
    estimate and what reduces it, a run the machine cannot hold; the estimate is printed through ``log``."""
    from admm_snn import resources
    from admm_snn.errors import ResourceError
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(4, 30, 2 * 8 * 8, generator=g) < 0.3).to(torch.uint8)
    labels = torch.arange(30) % 3
    lines = []
    r = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(), 1, log=lines.append)
    assert len(r.history) == 2 and len(lines) == 1 and lines[0].startswith("memory estimate:")
    monkeypatch.setattr(resources, "available_memory", lambda device: 1 << 16)
    with pytest.raises(ResourceError) as err:
        fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(), 1)
    assert "\n" not in str(err.value) and "needs about" in str(err.value) and "--time-steps" in str(err.value)


def test_conv_memory_estimate_by_part():
    """The state and working parts scale with T·N; the spike block below a narrower dense layer costs
    k×k factors (Woodbury), the box solver's n×n matrices n² each."""
    from admm_snn.resources import estimate_conv_memory
    problem = CS.conv_problem("8c5-p4-64", (2, 34, 34), 10)
    s = ADMMSettings()
    a, b = (estimate_conv_memory(problem, 10, n, s, torch.uint8) for n in (100, 200))
    assert b["state"] == 2 * a["state"] and b["working"] == 2 * a["working"] and b["frames"] == 2 * a["frames"]
    box = estimate_conv_memory(problem, 10, 100, s.replace(spike_solver="box"), torch.uint8)
    assert box["gram"] - a["gram"] == 4 * 7200 ** 2 * 4 + 4 * 64 ** 2 * 4 - 4 * 64 ** 2 * 8 - 4 * 10 ** 2 * 8
    # 8 channels of 30×30 and 64 neurons, as floats: potentials of every layer, spikes of the hidden ones
    assert a["state"] == 4 * (10 * 100 * (7200 + 64 + 10 + 7200 + 64) + 2 * 100 * 10)


@pytest.mark.determinism
def test_conv_resume_is_bitwise(tmp_path):
    """A conv run interrupted after its checkpoint at iteration 2 and resumed to 4 iterations gives bitwise
    the weights, best weights, history (apart from timings) and best iteration of the uninterrupted run;
    a checkpoint of another architecture or other data is a one-line CheckpointError."""
    from admm_snn.conv_train import train_conv
    from admm_snn.errors import CheckpointError
    g = torch.Generator().manual_seed(3)
    frames = (torch.rand(4, 30, 2 * 8 * 8, generator=g) < 0.3).to(torch.uint8)
    labels = torch.arange(30) % 3
    val = ((torch.rand(4, 12, 2 * 8 * 8, generator=g) < 0.3).to(torch.uint8), torch.arange(12) % 3)
    s = ADMMSettings(iterations=4, seed=1)
    a = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, val=val)
    fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, 2, val=val, out=tmp_path / "b", checkpoint_every=1)
    b = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, val=val, out=tmp_path / "b", checkpoint_every=1,
                 resume=True)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert all(torch.equal(x, y) for x, y in zip(a.best_weights, b.best_weights))
    assert a.best_iteration == b.best_iteration and b.iterations == 4

    def strip(h):
        return [{k: v for k, v in m.items() if k not in ("seconds", "wall_s")} for m in h]
    assert strip(a.history) == strip(b.history)
    with pytest.raises(CheckpointError, match=r"is for a network .*\(or --arch\)"):
        fit_conv(frames, labels, "3c3-p2-8", (2, 8, 8), s, val=val, out=tmp_path / "b", resume=True)
    with pytest.raises(CheckpointError, match="arch=3c3-p2-6"):  # same units, another architecture
        fit_conv(frames, labels, "3c3-a2-6", (2, 8, 8), s, val=val, out=tmp_path / "b", resume=True)
    with pytest.raises(CheckpointError, match="other data"):
        fit_conv(frames[:, :20], labels[:20], "3c3-p2-6", (2, 8, 8), s, val=val, out=tmp_path / "b", resume=True)
    out = tmp_path / "c"  # train_conv: a resumed run's metrics file is the uninterrupted run's
    train_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s.replace(iterations=2), out, val=val, checkpoint_every=1)
    c = train_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, out, val=val, checkpoint_every=1, resume=True)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, c.weights))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5


def test_conv_resume_from_a_damaged_generator_state_is_a_one_line_error(tmp_path):
    """load_checkpoint checks the generator state for every caller (dense and conv runs alike)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from admm_snn.errors import CheckpointError
    g = torch.Generator().manual_seed(5)
    frames = (torch.rand(3, 12, 2 * 8 * 8, generator=g) < 0.3).to(torch.uint8)
    labels = torch.arange(12) % 3
    s = ADMMSettings(iterations=1)
    fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, out=tmp_path, checkpoint_every=1)
    path = tmp_path / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["generator"] = torch.zeros(7, dtype=torch.uint8)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="generator state is damaged") as err:
        fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s.replace(iterations=2), out=tmp_path, resume=True)
    assert "\n" not in str(err.value)


def test_conv_shift_augmentation_projects_on_each_draw_and_forms_the_patch_gram_anew():
    """With a resampler, every re-projection of conv ADMM is the forward simulation of draw k's frames
    (iteration k), the first conv layer's patch Gram used in iteration k is that of draw k − 1's frames
    (not the cached Gram of the original frames), and the caller's frames are left as they were."""
    from admm_snn.admm import solver as S
    from admm_snn.data.augment import ShiftResampler
    from admm_snn.network import simulate
    from admm_snn import conv_network as CN
    g = torch.Generator().manual_seed(5)
    frames = (torch.rand(4, 24, 2 * 8 * 8, generator=g) < 0.3).to(torch.float32)
    labels = torch.arange(24) % 3
    r = ShiftResampler(frames, (2, 8, 8), 1, seed=2, groups=0)
    s = ADMMSettings(seed=1)
    problem = CS.conv_problem("3c3-p2-6", (2, 8, 8), 3)
    y = torch.nn.functional.one_hot(labels, 3).to(torch.float32)
    X = frames.clone()
    cache, gen = S.SolverCache(), torch.Generator().manual_seed(1)
    state = CS.init_state(X, y, problem, s, gen, cache)
    seen = []

    def redraw():
        k = state.iteration + 1
        G = cache.extra[CS.INPUT_PATCH_GRAM]
        expect, _ = CS.weight_sums(problem.net[0], r(k - 1), torch.zeros(4, 24, 3 * 6 * 6), S.DTYPES[s.gram_dtype])
        seen.append(torch.allclose(G, expect, rtol=0, atol=1e-9))
        X.copy_(r(k))
        S.forget_inputs(cache)

    for k in (1, 2, 3):
        CS.iterate(state, X, y, problem, s, cache, gen, redraw=redraw)
        trace = simulate(state.weights[:-1], r(k), s.lif, output=False, current=CN.currents(problem.net))
        assert torch.equal(state.spikes[0], trace.spikes[0]) and torch.equal(state.spikes[1], trace.spikes[1])
    assert seen == [True, True, True]
    assert not torch.equal(r(1), r(0)) and not torch.equal(r(2), r(1))
    res = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, 3, resample=r)
    assert torch.equal(frames, r(0))  # fit_conv works on its own copy
    assert all(torch.equal(a, b) for a, b in zip(res.weights, state.weights))


@pytest.mark.determinism
def test_conv_resume_with_shift_augmentation_is_bitwise(tmp_path):
    """A resumed augmented conv run restores the draw its checkpoint was projected on: bitwise the
    uninterrupted run (reproject every iteration and every second one)."""
    from admm_snn.data.augment import ShiftResampler
    g = torch.Generator().manual_seed(6)
    frames = (torch.rand(4, 30, 2 * 8 * 8, generator=g) < 0.3).to(torch.uint8)
    labels = torch.arange(30) % 3
    r = ShiftResampler(frames, (2, 8, 8), 1, seed=4)
    for reproject in (1, 2):
        s = ADMMSettings(iterations=5, seed=1, reproject=reproject)
        a = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, resample=r)
        out = tmp_path / f"r{reproject}"
        fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, 3, out=out, checkpoint_every=1, resample=r)
        b = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s, out=out, checkpoint_every=1, resume=True, resample=r)
        assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
        assert [m["train_accuracy"] for m in a.history] == [m["train_accuracy"] for m in b.history]
        plain = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s)
        assert not torch.equal(plain.weights[0], a.weights[0])
    with pytest.raises(SettingsError, match="re-projection"):
        fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), ADMMSettings(reproject=0), 1, resample=r)
