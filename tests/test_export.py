"""NIR export: the graph's structure and parameter mapping, and that snnTorch, loading the written file,
reproduces admm-snn's forward simulation exactly on real N-MNIST recordings. Also: loading a model
never executes code from the file."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")

from admm_snn.admm.settings import ADMMSettings  # noqa: E402
from admm_snn.cli import main  # noqa: E402
from admm_snn.data import FrameSettings, load_nmnist  # noqa: E402
from admm_snn.errors import CheckpointError, SettingsError  # noqa: E402
from admm_snn.export import RESET, import_snntorch, simulate_snntorch, to_nir, write_nir  # noqa: E402
from admm_snn.io import load_model, save_model  # noqa: E402
from admm_snn.network import LIFParams, forward, predict  # noqa: E402
from admm_snn.train import train  # noqa: E402


@pytest.fixture(scope="module")
def nmnist_frames(nmnist_root, tmp_path_factory):
    ds = load_nmnist(nmnist_root, "train", FrameSettings(time_steps=30, bin_ms=10.0, denoise_ms=10.0),
                     cache_dir=tmp_path_factory.mktemp("cache"), limit=40)
    return ds.time_major(), ds.labels


@pytest.fixture(scope="module")
def trained(nmnist_frames):
    """A small network with two hidden layers trained by ADMM on 40 real recordings."""
    X, y = nmnist_frames
    s = ADMMSettings(iterations=3, warmup=1, seed=0)
    return train(X, y, [16, 12], s, n_classes=10, progress=False).weights, s


def _run_both(weights, X, delta, theta, dt, tmp_path):
    params = LIFParams(delta, theta)
    path = tmp_path / "net.nir"
    write_nir(to_nir(weights, delta, theta, dt=dt), path)
    graph = nir.read(str(path))
    net = import_snntorch(graph)
    out, spikes = simulate_snntorch(net, X, graph)
    return forward(weights, X, params), predict(weights, X, params), out, spikes, graph


@pytest.mark.parametrize("dt", [1e-2, 1e-4])
def test_snntorch_import_reproduces_the_forward_simulation(trained, nmnist_frames, tmp_path, dt):
    weights, s = trained
    X, _ = nmnist_frames
    trace, pred, out, spikes, _ = _run_both(weights, X, s.delta, s.theta, dt, tmp_path)
    counts = [a.sum(dim=(0, 2)) for a in trace.spikes]  # per sample, per hidden layer
    assert all(float(c.sum()) > 0 for c in counts), "the test network must spike"
    assert all(0 < float(a.mean()) < 0.9 for a in trace.spikes)
    assert torch.equal(out[-1].argmax(dim=1), pred)
    for ours, theirs, c in zip(trace.spikes, spikes, counts):
        assert torch.equal(theirs.sum(dim=(0, 2)).to(c.dtype), c)  # hidden spike counts per sample
        assert torch.equal(theirs.to(ours.dtype), ours)  # and the spike trains themselves
    assert torch.equal(out, trace.output)  # output potentials, bitwise


def test_fixed_random_weights_on_real_recordings(nmnist_frames, tmp_path):
    """Independent of training: random weights that make every hidden layer fire, δ = 0.8, θ = 0.7."""
    X, _ = nmnist_frames
    g = torch.Generator().manual_seed(1)
    W = [torch.randn(24, 2312, generator=g) * 3 / 2312 ** 0.5, torch.randn(10, 24, generator=g) / 5]
    trace, pred, out, spikes, _ = _run_both(W, X, 0.8, 0.7, 1e-3, tmp_path)
    assert float(trace.spikes[0].sum()) > 0
    assert torch.equal(out[-1].argmax(dim=1), pred)
    assert torch.equal(spikes[0].to(trace.spikes[0].dtype), trace.spikes[0])


def test_plain_snntorch_import_resets_to_zero(trained, nmnist_frames, tmp_path):
    """Why import_snntorch exists: snntorch.import_from_nir alone (even with its own dt = 1e-4, so the leak
    is right) builds reset-to-zero neurons, which spike differently from admm-snn's soft reset."""
    from snntorch.import_nir import import_from_nir
    weights, s = trained
    X, _ = nmnist_frames
    graph = to_nir(weights, s.delta, s.theta, dt=1e-4)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        plain = import_from_nir(graph)
    _, spikes = simulate_snntorch(plain, X, graph)
    trace = forward(weights, X, LIFParams(s.delta, s.theta))
    assert not torch.equal(spikes[0].to(trace.spikes[0].dtype), trace.spikes[0])


def test_graph_structure_and_parameter_mapping():
    g = torch.Generator().manual_seed(0)
    W = [torch.randn(5, 7, generator=g), torch.randn(4, 5, generator=g), torch.randn(3, 4, generator=g)]
    dt, delta, theta = 2e-3, 0.9, 1.5
    graph = to_nir(W, delta, theta, dt)
    assert set(graph.nodes) == {"input", "fc1", "lif1", "fc2", "lif2", "fc3", "out", "output"}
    assert graph.edges == [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                           ("lif2", "fc3"), ("fc3", "out"), ("out", "output")]
    for i, name in enumerate(["fc1", "fc2", "fc3"]):
        assert isinstance(graph.nodes[name], nir.Linear)
        assert np.array_equal(graph.nodes[name].weight, W[i].numpy())
    for name, n, role in (("lif1", 5, "hidden"), ("lif2", 4, "hidden"), ("out", 3, "output")):
        node = graph.nodes[name]
        assert isinstance(node, nir.LIF) and node.tau.shape == (n,)
        # one forward-Euler step of tau dv/dt = -v + R I with step dt: leak δ, unit input gain
        assert np.allclose(1 - dt / node.tau, delta, rtol=0, atol=1e-15)
        assert np.allclose(node.r * dt / node.tau, 1.0, rtol=0, atol=1e-15)
        assert np.all(node.v_leak == 0) and np.all(node.v_reset == 0)
        assert node.metadata["role"] == role
    assert np.all(graph.nodes["lif1"].v_threshold == theta) and graph.nodes["lif1"].metadata["reset"] == RESET
    assert np.all(np.isinf(graph.nodes["out"].v_threshold))  # never spikes: a leaky integrator
    assert graph.metadata["dt"] == dt and graph.metadata["reset"] == RESET
    # δ = 1: no finite tau, integrate-and-fire nodes with R = 1/dt
    g1 = to_nir(W, 1.0, theta, dt)
    assert isinstance(g1.nodes["lif1"], nir.IF) and np.allclose(g1.nodes["lif1"].r * dt, 1.0)
    with pytest.raises(SettingsError):
        import_snntorch(g1)


@pytest.mark.parametrize("bad", [
    dict(delta=0.0), dict(delta=1.5), dict(theta=0.0), dict(theta=-1.0), dict(dt=0.0), dict(dt=float("nan")),
    dict(weights=[]), dict(weights=[torch.zeros(3, 4), torch.zeros(2, 5)]), dict(weights=[torch.zeros(3)]),
    dict(weights=[torch.full((2, 2), float("nan"))]),
])
def test_to_nir_rejects_bad_arguments(bad):
    args = dict(weights=[torch.zeros(3, 4), torch.zeros(2, 3)], delta=0.9, theta=1.0, dt=1e-3)
    args.update(bad)
    with pytest.raises(SettingsError) as e:
        to_nir(args["weights"], args["delta"], args["theta"], args["dt"])
    assert "\n" not in str(e.value)


def test_export_command(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    W = [torch.randn(6, 2312, generator=g), torch.randn(10, 6, generator=g)]
    save_model(tmp_path / "m" / "model.safetensors", W, 0.95, 1.0,
               {"data": {"dataset": "nmnist", "bin_ms": 10.0}})
    assert main(["export", "--model", str(tmp_path / "m"), "--format", "nir", str(tmp_path / "a.nir")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["dt"] == pytest.approx(0.01)  # the model's frame width
    graph = nir.read(str(tmp_path / "a.nir"))
    assert math.isclose(graph.nodes["lif1"].tau[0], 0.01 / 0.05) and np.array_equal(graph.nodes["fc1"].weight, W[0])
    assert main(["export", "--model", str(tmp_path / "m"), "--dt", "1e-4", str(tmp_path / "b.nir")]) == 0
    assert float(nir.read(str(tmp_path / "b.nir")).metadata["dt"]) == 1e-4
    assert not list(tmp_path.glob(".*.tmp"))


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_loading_a_model_never_executes_code(tmp_path):
    """A pickle whose loading would create a folder, saved as model.safetensors (raw pickle and torch.save
    zip): refused as not-safetensors, and the folder is never created."""
    marker = tmp_path / "executed"
    for i, dump in enumerate([lambda f: f.write_bytes(pickle.dumps(_Payload(str(marker)))),
                              lambda f: torch.save({"W1": _Payload(str(marker))}, f)]):
        d = tmp_path / f"m{i}"
        d.mkdir()
        dump(d / "model.safetensors")
        with pytest.raises(CheckpointError) as e:
            load_model(d)
        assert "not a safetensors file" in str(e.value) and "\n" not in str(e.value)
        assert not marker.exists()
