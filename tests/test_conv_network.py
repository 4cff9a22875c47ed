"""Convolutional LIF networks (conv_network.py, arch.py): forward simulation against the dense network,
the layer shapes, the weight initialiser and prediction."""

from __future__ import annotations

import pytest
import torch

from admm_snn import conv_network as CN
from admm_snn.admm import conv as CV
from admm_snn.admm.state import random_weights
from admm_snn.arch import ConvSpec, DenseSpec, PoolSpec, layer_shapes, parse_arch
from admm_snn.errors import SettingsError
from admm_snn.network import LIFParams, forward, predict

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64
P = LIFParams(0.9, 1.0)


def _frames(T, N, n, seed, p=0.3):
    return (torch.rand(T, N, n, generator=torch.Generator().manual_seed(seed)) < p).to(DT)


def test_the_specs_are_the_same_objects_in_both_modules():
    assert CV.ConvSpec is ConvSpec and CV.parse_arch is parse_arch and CV.pool is CN.pool
    assert CV.conv_forward is CN.conv_forward


def test_a_full_image_kernel_is_the_dense_network():
    """k = H, no padding: each conv layer is a dense layer of C_out units (the kernel reshaped), and a 1×1
    kernel on 1×1 images is a dense layer too; every potential and spike equals the dense network's."""
    shape, arch = (2, 7, 7), "6c7-4c1-5"
    g = torch.Generator().manual_seed(0)
    weights = CN.init_weights(arch, shape, 3, 3.0, g, DT)
    assert [tuple(w.shape) for w in weights] == [(6, 2, 7, 7), (4, 6, 1, 1), (5, 4), (3, 5)]
    dense = [w.reshape(w.shape[0], -1) for w in weights]
    frames = _frames(12, 20, 98, 1)
    conv, ref = CN.forward(arch, shape, weights, frames, P), forward(dense, frames, P)
    assert sum(float(a.sum()) for a in ref.spikes) > 0  # the layers fire: the comparison is not of zeros
    for a, b in zip(conv.spikes, ref.spikes):
        assert torch.equal(a, b)
    for a, b in zip(conv.potentials, ref.potentials):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert torch.equal(CN.predict(arch, shape, weights, frames, P), predict(dense, frames, P))


def _toeplitz(layer: CN.Layer, W: torch.Tensor) -> torch.Tensor:
    """The (n_out, n_in) matrix of the layer's operator, its columns the images of the unit vectors."""
    basis = torch.eye(layer.n_in, dtype=DT)
    return layer.current(basis, W).T


@pytest.mark.parametrize("arch,shape,gain", [("4c3p1-p2-3c3s2-10", (2, 9, 9), 4.0), ("3c2s2-a2-2c2", (1, 10, 10), 12.0),
                                             ("5c3-p2-6", (2, 8, 8), 4.0)])
def test_a_conv_network_is_the_dense_network_of_its_operators(arch, shape, gain):
    """Every layer's operator W ∗ pool(·) (stride, padding, sum or average pooling, a pooled dense layer)
    as its explicit dense matrix: the dense network of those matrices simulates the same network."""
    g = torch.Generator().manual_seed(2)
    weights = CN.init_weights(arch, shape, 4, gain, g, DT)
    net = CN.network_layers(arch, shape, 4)
    mats = [_toeplitz(L, w) for L, w in zip(net, weights)]
    assert [tuple(m.shape) for m in mats] == [(L.n_out, L.n_in) for L in net]
    frames = _frames(10, 16, net[0].n_in, 3, 0.5)
    conv, ref = CN.forward(arch, shape, weights, frames, P), forward(mats, frames, P)
    assert all(float(a.sum()) > 0 for a in ref.spikes)
    for a, b in zip(conv.spikes, ref.spikes):
        assert torch.equal(a, b)
    for a, b in zip(conv.potentials, ref.potentials):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    # frames given as images, and simulated in chunks of samples: the same numbers
    images = frames.reshape(10, 16, *shape)
    chunked = CN.forward(arch, shape, weights, images, P, chunk=5)
    assert all(torch.equal(a, b) for a, b in zip(chunked.spikes, conv.spikes))
    assert torch.allclose(chunked.output, conv.output, atol=1e-12, rtol=0)


def test_shapes_of_the_issue_architecture():
    arch = "12c5-p2-32c5-p2-128"
    assert layer_shapes(arch, (2, 34, 34)) == [(12, 30, 30), (12, 15, 15), (32, 11, 11), (32, 5, 5), (128,)]
    assert CN.output_shapes(arch, (2, 34, 34), 10) == [(12, 30, 30), (32, 11, 11), (128,), (10,)]
    assert CN.output_shapes(arch, (1, 28, 28), 10) == [(12, 24, 24), (32, 8, 8), (128,), (10,)]
    net = CN.network_layers(arch, (1, 28, 28), 10)
    assert [L.weight_shape for L in net] == [(12, 1, 5, 5), (32, 12, 5, 5), (128, 512), (10, 128)]
    assert [L.pool_size for L in net] == [1, 2, 2, 1]
    assert CN.output_shapes("8c3s2p1-a2-64", (2, 34, 34), 10) == [(8, 17, 17), (64,), (10,)]
    g = torch.Generator().manual_seed(0)
    weights = CN.init_weights(arch, (2, 34, 34), 10, 3.0, g)
    frames = (torch.rand(4, 3, 2 * 34 * 34, generator=g) < 0.05).float()
    tr = CN.forward(arch, (2, 34, 34), weights, frames, P)
    assert [tuple(z.shape) for z in tr.potentials] == [(4, 3, 10800), (4, 3, 3872), (4, 3, 128), (4, 3, 10)]


def test_init_weights_of_a_dense_architecture_are_the_dense_networks():
    a = CN.init_weights("12-7", (1, 4, 5), 3, 2.0, torch.Generator().manual_seed(4), DT)
    b = random_weights([20, 12, 7, 3], 2.0, torch.Generator().manual_seed(4), DT, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    k = CN.init_weights("200c5", (3, 9, 9), 2, 2.0, torch.Generator().manual_seed(5), DT)[0]
    assert float(k.std()) == pytest.approx(2.0 / 75 ** 0.5, rel=0.05)  # N(0, (gain / sqrt(C_in k²))²)


def test_prediction_is_deterministic_given_the_seed():
    arch, shape = "4c5-p2-16", (1, 12, 12)
    frames = _frames(8, 30, 144, 6, 0.4).float()

    def run(seed):
        w = CN.init_weights(arch, shape, 10, 4.0, torch.Generator().manual_seed(seed))
        return w, CN.predict(arch, shape, w, frames, P, chunk=7)

    (w1, p1), (w2, p2), (w3, p3) = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2)) and torch.equal(p1, p2)
    assert not torch.equal(w1[0], w3[0])
    assert p1.shape == (30,) and p1.dtype == torch.long
    assert torch.equal(p1, CN.forward(arch, shape, w1, frames, P).output[-1].argmax(1))


@pytest.mark.parametrize("call,needle", [
    (lambda: CN.output_shapes("12c9", (1, 8, 8), 10), "kernel 9"),
    (lambda: CN.output_shapes("4c3-p20-5", (1, 8, 8), 10), "pooling 20x20"),
    (lambda: CN.output_shapes("4c3", (1, 8), 10), "input shape"),
    (lambda: CN.output_shapes("4c3-p2-p2-5", (1, 16, 16), 10), "two pooling"),
    (lambda: CN.output_shapes("4c3", (1, 8, 8), 0), "output layer"),
    (lambda: CN.forward("4c3", (1, 8, 8), CN.init_weights("4c3", (1, 8, 8), 2, 1.0, torch.Generator()),
                        torch.zeros(3, 2, 65), P), "frames have shape"),
    (lambda: CN.forward("4c3", (1, 8, 8), [torch.zeros(4, 1, 5, 5), torch.zeros(2, 144)],
                        torch.zeros(3, 2, 64), P), "weights of layer 1"),
    (lambda: CN.init_weights("4c3", (1, 8, 8), 2, 0.0, torch.Generator()), "gain"),
])
def test_bad_input_is_a_one_line_error(call, needle):
    with pytest.raises(SettingsError) as e:
        call()
    assert "\n" not in str(e.value) and needle in str(e.value)


def test_copy_layers_and_identity_weights_copy_the_spikes_below():
    """A convolution with as many output as input channels, odd kernel, stride 1 (and a dense layer as
    wide as its input) starts as a copy: with gain 1.1θ and δ = 0.95 its spike train is that of the unit
    below, cropped by the valid convolution, so the deep network computes what the shallow one does."""
    params = LIFParams(0.95, 1.0)
    arch, shape = "3c3-3c3-3c5-6c3-16-16", (2, 12, 12)
    net = CN.network_layers(arch, shape, 4)
    assert CN.copy_layers(net) == [1, 2, 5]  # not the first layer, 3->6 channels, nor the output
    w = CN.init_weights(arch, shape, 4, 3.0, torch.Generator().manual_seed(0), dtype=DT)
    for l in CN.copy_layers(net):
        w[l] = CN.identity_weight(net[l], 1.1 * params.theta, dtype=DT)
    assert float(w[1][0, 0, 1, 1]) == pytest.approx(1.1) and float(w[1].abs().sum()) == pytest.approx(3 * 1.1)
    assert torch.equal(w[5], 1.1 * torch.eye(16, dtype=DT))
    frames = _frames(12, 5, 2 * 144, 3, 0.4)
    trace = CN.forward(arch, shape, w, frames, params)
    a1 = trace.spikes[0].reshape(12, 5, 3, 10, 10)
    a2 = trace.spikes[1].reshape(12, 5, 3, 8, 8)
    a3 = trace.spikes[2].reshape(12, 5, 3, 4, 4)
    assert float(a1.mean()) > 0.05  # there is something to copy
    assert torch.equal(a2, a1[..., 1:-1, 1:-1]) and torch.equal(a3, a2[..., 2:-2, 2:-2])
    assert torch.equal(trace.spikes[5], trace.spikes[4])
    # average pooling before a copy: the gain is scaled by the window so one spike still counts
    avg = CN.network_layers("3c3-a2-3c3-8", shape, 4)
    assert CN.copy_layers(avg) == [1]
    assert float(CN.identity_weight(avg[1], 1.1)[0, 0, 1, 1]) == pytest.approx(4.4)
    # noise: a random part on top, drawn from the generator
    noisy = CN.identity_weight(net[1], 1.1, 0.5, torch.Generator().manual_seed(1), dtype=DT)
    assert not torch.equal(noisy, w[1]) and float((noisy - w[1]).abs().max()) > 0


def test_conv_init_state_starts_deep_layers_as_copies():
    """conv_solver.init_state with deep_init="identity" (the default): the copy layers hold the identity
    kernel (not rate-calibrated), the other hidden layers are calibrated; "random" keeps every layer drawn."""
    from admm_snn.admm import conv_solver as CS
    from admm_snn.admm.settings import ADMMSettings
    arch, shape = "3c3-3c3-8", (2, 12, 12)
    problem = CS.conv_problem(arch, shape, 4)
    frames = _frames(6, 20, 288, 4, 0.3).float()
    y = torch.nn.functional.one_hot(torch.arange(20) % 4, 4).double()
    st = CS.init_state(frames, y, problem, ADMMSettings(), torch.Generator().manual_seed(0))
    assert torch.equal(st.weights[1], CN.identity_weight(problem.net[1], 1.1, dtype=st.weights[1].dtype))
    rnd = CS.init_state(frames, y, problem, ADMMSettings(deep_init="random"), torch.Generator().manual_seed(0))
    assert not torch.equal(rnd.weights[1], st.weights[1])
    assert torch.equal(rnd.weights[0], st.weights[0])  # the first layer is drawn and calibrated alike
    # the copy layer fires like the layer below it (a cropped copy of its spikes)
    a1 = st.spikes[0].reshape(6, 20, 3, 10, 10)
    assert torch.equal(st.spikes[1].reshape(6, 20, 3, 8, 8), a1[..., 1:-1, 1:-1])
