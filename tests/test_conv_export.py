"""NIR export of convolutional networks (export.to_nir_conv): the graph's structure and parameter
mapping, that write_nir / nir.read keep it, and that snnTorch, loading the written file, gives the
predictions, output potentials and spike counts of conv_network.forward / predict."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")

from admm_snn.conv_network import forward, init_weights, output_shapes, predict  # noqa: E402
from admm_snn.errors import SettingsError  # noqa: E402
from admm_snn.export import (RESET, SumPool2d, import_snntorch, simulate_snntorch, to_nir, to_nir_conv,  # noqa: E402
                             write_nir)
from admm_snn.network import LIFParams  # noqa: E402
from admm_snn.network import forward as dense_forward  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"

CASES = [
    ("4c5-p2-8c3-16", (2, 12, 12)),
    ("4c5-p2-8c3-16", (1, 10, 10)),
    ("3c3s2p1-a2-6c2-p2-12", (2, 13, 13)),  # stride, padding, average then sum pooling before the dense layer
    ("4c3", (1, 6, 6)),  # a convolution straight into the output layer
    ("p2-3c2-8", (2, 8, 8)),  # pooling of the input frames
    ("16", (1, 6, 6)),  # no convolution: flatten, then the dense layers
]


def _net(arch, shape, seed=0, gain=3.0):
    return init_weights(arch, shape, 10, gain, torch.Generator().manual_seed(seed))


def _frames(shape, T=20, N=16, seed=1, p=0.3):
    return (torch.rand((T, N) + tuple(shape), generator=torch.Generator().manual_seed(seed)) < p).float()


@pytest.mark.parametrize("arch,shape", CASES, ids=[f"{a}-{'x'.join(map(str, s))}" for a, s in CASES])
def test_snntorch_round_trip_matches_conv_network(arch, shape, tmp_path):
    delta, theta = 0.9, 1.0
    W = _net(arch, shape)
    X = _frames(shape)
    params = LIFParams(delta, theta)
    trace = forward(arch, shape, W, X, params)
    assert all(0 < float(a.mean()) < 0.9 for a in trace.spikes), "every hidden layer of the test network must fire"
    write_nir(to_nir_conv(arch, shape, W, delta, theta, dt=1e-3), tmp_path / "conv.nir")
    graph = nir.read(str(tmp_path / "conv.nir"))
    net = import_snntorch(graph)
    out, spikes = simulate_snntorch(net, X, graph)
    assert torch.equal(out[-1].argmax(dim=1), predict(arch, shape, W, X, params))
    assert torch.allclose(out, trace.output, rtol=0, atol=1e-5)
    assert len(spikes) == len(trace.spikes)
    for ours, theirs in zip(trace.spikes, spikes):
        assert theirs.shape == ours.shape
        assert torch.equal(theirs.sum(dim=(0, 2)).to(ours.dtype), ours.sum(dim=(0, 2)))  # per sample, per layer
    # flat frames (T, N, C·H·W) give the same simulation
    out_flat, _ = simulate_snntorch(net, X.reshape(X.shape[0], X.shape[1], -1), graph)
    assert torch.equal(out_flat, out)


def test_graph_structure_and_parameter_mapping():
    arch, shape, dt, delta, theta = "4c5-p2-8c3-16", (2, 12, 12), 2e-3, 0.9, 1.5
    W = _net(arch, shape)
    graph = to_nir_conv(arch, shape, W, delta, theta, dt)
    names = ["input", "conv1", "lif1", "pool2", "conv2", "lif2", "flatten", "fc3", "lif3", "fc4", "out", "output"]
    assert list(graph.nodes) == names
    assert graph.edges == list(zip(names[:-1], names[1:]))
    assert isinstance(graph.nodes["input"], nir.Input)
    assert list(graph.nodes["input"].input_type["input"]) == [2, 12, 12]
    for name, w in (("conv1", W[0]), ("conv2", W[1])):
        node = graph.nodes[name]
        assert isinstance(node, nir.Conv2d) and node.weight.dtype == np.float32
        assert np.array_equal(node.weight, w.numpy()) and np.all(node.bias == 0)
        assert tuple(node.stride) == (1, 1) and tuple(node.padding) == (0, 0)
    assert tuple(graph.nodes["conv1"].input_shape) == (12, 12) and tuple(graph.nodes["conv2"].input_shape) == (4, 4)
    pool = graph.nodes["pool2"]
    assert isinstance(pool, nir.SumPool2d)
    assert list(pool.kernel_size) == [2, 2] and list(pool.stride) == [2, 2] and list(pool.padding) == [0, 0]
    flat = graph.nodes["flatten"]
    assert isinstance(flat, nir.Flatten) and list(flat.input_type["input"]) == [8, 2, 2]
    assert list(flat.output_type["output"]) == [32]
    for name, w in (("fc3", W[2]), ("fc4", W[3])):
        assert isinstance(graph.nodes[name], nir.Linear) and np.array_equal(graph.nodes[name].weight, w.numpy())
    shapes = output_shapes(arch, shape, 10)
    for name, shp, role in zip(["lif1", "lif2", "lif3", "out"], shapes, ["hidden"] * 3 + ["output"]):
        node = graph.nodes[name]
        assert isinstance(node, nir.LIF) and node.tau.shape == tuple(shp) and node.v_threshold.shape == tuple(shp)
        assert np.allclose(1 - dt / node.tau, delta, rtol=0, atol=1e-15)
        assert np.allclose(node.r * dt / node.tau, 1.0, rtol=0, atol=1e-15)
        assert np.all(node.v_leak == 0) and np.all(node.v_reset == 0)
        assert node.metadata["role"] == role
    assert np.all(graph.nodes["lif1"].v_threshold == theta) and graph.nodes["lif1"].metadata["reset"] == RESET
    assert np.all(np.isinf(graph.nodes["out"].v_threshold))
    assert graph.metadata["arch"] == arch and list(graph.metadata["input_shape"]) == [2, 12, 12]
    assert graph.metadata["dt"] == dt and graph.metadata["reset"] == RESET
    # average pooling is an AvgPool2d node, imported as torch's average pooling; sum pooling as SumPool2d
    g2 = to_nir_conv("3c3-a2-5", (1, 8, 8), _net("3c3-a2-5", (1, 8, 8)), delta, theta, dt)
    assert isinstance(g2.nodes["pool2"], nir.AvgPool2d) and not isinstance(g2.nodes["pool2"], nir.SumPool2d)
    assert type(import_snntorch(g2).pool2) is torch.nn.AvgPool2d
    assert isinstance(import_snntorch(graph).pool2, SumPool2d)
    # δ = 1: IF nodes shaped like the layers; snnTorch cannot load them (as for dense graphs)
    g1 = to_nir_conv(arch, shape, W, 1.0, theta, dt)
    assert isinstance(g1.nodes["lif1"], nir.IF) and g1.nodes["lif1"].r.shape == tuple(shapes[0])
    with pytest.raises(SettingsError):
        import_snntorch(g1)


def test_write_nir_reads_back_the_same_graph(tmp_path):
    arch, shape = "3c3s2p1-a2-6c2-p2-12", (2, 13, 13)
    W = _net(arch, shape)
    graph = to_nir_conv(arch, shape, W, 0.8, 0.7, dt=1e-3)
    write_nir(graph, tmp_path / "net.nir")
    back = nir.read(str(tmp_path / "net.nir"))
    assert set(back.nodes) == set(graph.nodes)
    assert sorted(back.edges) == sorted(graph.edges)
    for name, node in graph.nodes.items():
        assert type(back.nodes[name]) is type(node), name
        for field in ("weight", "bias", "tau", "r", "v_threshold", "kernel_size", "stride", "padding"):
            if hasattr(node, field):
                assert np.array_equal(np.asarray(getattr(back.nodes[name], field)), np.asarray(getattr(node, field))), \
                    (name, field)
    assert back.nodes["conv1"].weight.dtype == np.float32
    assert back.metadata["arch"] == arch
    assert not list(tmp_path.glob(".*.tmp"))


def test_dense_graphs_still_round_trip():
    """The dense path after the conv additions: same node set, and snnTorch reproduces network.forward."""
    g = torch.Generator().manual_seed(2)
    W = [torch.randn(12, 30, generator=g) * 3 / 30 ** 0.5, torch.randn(5, 12, generator=g) / 3]
    X = (torch.rand(15, 8, 30, generator=g) < 0.3).float()
    graph = to_nir(W, 0.9, 1.0, 1e-3)
    assert list(graph.nodes) == ["input", "fc1", "lif1", "fc2", "out", "output"]
    out, spikes = simulate_snntorch(import_snntorch(graph), X, graph)
    trace = dense_forward(W, X, LIFParams(0.9, 1.0))
    assert float(trace.spikes[0].sum()) > 0
    assert torch.equal(out, trace.output) and torch.equal(spikes[0].to(trace.spikes[0].dtype), trace.spikes[0])


_W = "4c5-p2-8c3-16"


@pytest.mark.parametrize("change", [
    dict(weights=[]),
    dict(weights="drop-one"),
    dict(weights="wrong-kernel"),
    dict(weights="nan"),
    dict(weights="vector-last"),
    dict(arch="4c5-p2-8x3-16"),
    dict(arch="4c13-16"),
    dict(input_shape=(12, 12)),
    dict(delta=0.0), dict(theta=-1.0), dict(dt=0.0), dict(dt=float("inf")),
])
def test_to_nir_conv_rejects_bad_arguments(change):
    args = dict(arch=_W, input_shape=(2, 12, 12), delta=0.9, theta=1.0, dt=1e-3)
    W = _net(_W, (2, 12, 12))
    change = dict(change)
    bad = change.pop("weights", None)
    args.update(change)
    if bad == "drop-one":
        W = W[:-2] + W[-1:]
    elif bad == "wrong-kernel":
        W[1] = torch.zeros(8, 4, 5, 5)
    elif bad == "nan":
        W[0] = torch.full_like(W[0], float("nan"))
    elif bad == "vector-last":
        W[-1] = torch.zeros(10)
    elif bad == []:
        W = []
    with pytest.raises(SettingsError) as e:
        to_nir_conv(args["arch"], args["input_shape"], W, args["delta"], args["theta"], args["dt"])
    assert "\n" not in str(e.value)


def test_simulate_rejects_frames_of_another_shape():
    W = _net(_W, (2, 12, 12))
    graph = to_nir_conv(_W, (2, 12, 12), W, 0.9, 1.0)
    with pytest.raises(SettingsError) as e:
        simulate_snntorch(import_snntorch(graph), torch.zeros(3, 2, 1, 12, 12), graph)
    assert "\n" not in str(e.value)


def test_docs_example_runs():
    """The python block of docs/export.md's "Convolutional networks" section, run as written."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Convolutional networks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the section has no python example"
    exec(compile(blocks[0], str(DOCS), "exec"), {})
