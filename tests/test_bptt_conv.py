"""The snnTorch BPTT baseline on convolutional architectures (BPTTConvNet, train_bptt_conv): the same
forward pass as admm_snn.conv_network, weights in its layout, learning on real MNIST, seeding, errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("snntorch")

from admm_snn import conv_network as CN  # noqa: E402
from admm_snn.baselines.bptt import BPTTConvNet, BPTTSettings, train_bptt_conv  # noqa: E402
from admm_snn.errors import DataError, SettingsError  # noqa: E402
from admm_snn.network import LIFParams  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [("4c5-p2-8c3-16", (2, 12, 12), 3.0), ("4c3-p2-10", (1, 10, 10), 3.0),
         ("3c3s2p1-a2-6", (2, 9, 9), 4.0), ("4c3", (1, 6, 6), 2.0)]


def _frames(shape, gen, T=6, N=5, p=0.3):
    return (torch.rand(T, N, CN.size(shape), generator=gen) < p).float()


@pytest.mark.parametrize("arch,shape,gain", CASES)
def test_forward_equals_conv_network_forward(arch, shape, gain):
    params = LIFParams(delta=0.9, theta=1.0)
    gen = torch.Generator().manual_seed(len(arch))
    weights = CN.init_weights(arch, shape, 4, gain, gen)
    frames = _frames(shape, gen)
    net = BPTTConvNet.from_weights(arch, shape, weights, params)
    with torch.no_grad():
        out, hid_z, hid_a = net(frames, record=True)
    ref = CN.forward(arch, shape, weights, frames, params)
    assert len(hid_a) == len(ref.spikes) == len(weights) - 1
    for z, a, rz, ra in zip(hid_z, hid_a, ref.potentials[:-1], ref.spikes):
        assert torch.equal(a, ra)
        assert torch.equal(z, rz)
    assert torch.equal(out, ref.output)
    assert torch.equal(out[-1].argmax(1), CN.predict(arch, shape, weights, frames, params))
    assert 0.0 < float(ref.spikes[0].mean()) < 1.0  # both spikes and silence are exercised
    assert all(torch.equal(u, v) for u, v in zip(net.export_weights(), weights))


def test_modules_are_conv2d_and_linear_in_conv_network_layout():
    net = BPTTConvNet("4c5-p2-8c3-16", (2, 12, 12), 3, LIFParams())
    kinds = [type(m).__name__ for m in net.fcs]
    assert kinds == ["Conv2d", "Conv2d", "Linear", "Linear"]
    assert all(m.bias is None for m in net.fcs)
    assert [tuple(w.shape) for w in net.export_weights()] == [
        tuple(L.weight_shape) for L in CN.network_layers("4c5-p2-8c3-16", (2, 12, 12), 3)]


def _blobs(n, gen, shape=(1, 8, 8), T=6):
    """Class 0: the left half of the image fires often, class 1: the right half."""
    labels = torch.arange(n) % 2
    C, H, W = shape
    p = torch.full((n, C, H, W), 0.05)
    p[labels == 0, :, :, : W // 2] = 0.5
    p[labels == 1, :, :, W // 2:] = 0.5
    frames = (torch.rand(T, n, C * H * W, generator=gen) < p.reshape(1, n, -1)).float()
    return frames, labels


def test_round_trip_validation_and_seeding():
    gen = torch.Generator().manual_seed(0)
    x, y = _blobs(48, gen)
    xv, yv = _blobs(24, gen)
    params = LIFParams()
    s = BPTTSettings(epochs=3, lr=1e-2, batch_size=16, seed=5)
    a = train_bptt_conv(x, y, "3c3-p2-8", (1, 8, 8), params, s, xv, yv)
    assert [tuple(w.shape) for w in a.weights] == [(3, 1, 3, 3), (8, 27), (2, 8)]
    assert all(w.dtype == torch.float32 for w in a.weights)
    accs = [h["val_acc"] for h in a.history]
    assert len(a.history) == 3 and a.best_epoch == accs.index(max(accs)) + 1
    got = float((CN.predict("3c3-p2-8", (1, 8, 8), a.weights, xv, params) == yv).float().mean())
    assert got == pytest.approx(max(accs))
    images = x.reshape(x.shape[0], x.shape[1], 1, 8, 8)  # (T, N, C, H, W) frames are accepted too
    b = train_bptt_conv(images, y, "3c3-p2-8", (1, 8, 8), params, s, xv, yv)
    c = train_bptt_conv(x, y, "3c3-p2-8", (1, 8, 8), params, BPTTSettings(epochs=3, lr=1e-2, batch_size=16, seed=6),
                        xv, yv)
    assert all(torch.equal(u, v) for u, v in zip(a.weights, b.weights))
    assert not all(torch.equal(u, v) for u, v in zip(a.weights, c.weights))


def test_init_rate_calibrates_the_conv_layers():
    gen = torch.Generator().manual_seed(1)
    x, y = _blobs(40, gen)
    params = LIFParams()
    res = train_bptt_conv(x, y, "4c3-4c3-12", (1, 8, 8), params, BPTTSettings(epochs=1, lr=1e-9, init_rate=0.1))
    rates = [float(a.mean()) for a in CN.forward("4c3-4c3-12", (1, 8, 8), res.weights, x, params).spikes]
    assert len(rates) == 3 and all(0.05 < r < 0.2 for r in rates), rates


def test_learns_on_mnist(shared_data, tmp_path):
    from admm_snn.data.idx import load_image_dataset
    ds = load_image_dataset(shared_data / "mnist", "train", time_steps=6, limit=300, cache_dir=tmp_path)
    X, lab = ds.time_major(), ds.labels
    params = LIFParams()
    arch, shape = "4c5s2-16", (1, 28, 28)
    s = BPTTSettings(epochs=4, lr=5e-3, batch_size=32, seed=0)
    start = BPTTSettings(epochs=1, lr=1e-9, batch_size=32, seed=0)  # the same initial weights, untrained
    before = train_bptt_conv(X, lab, arch, shape, params, start)
    res = train_bptt_conv(X, lab, arch, shape, params, s)
    acc = lambda w: float((CN.predict(arch, shape, w, X, params) == lab).float().mean())  # noqa: E731
    assert acc(res.weights) > 0.6 and acc(res.weights) > acc(before.weights) + 0.3, (acc(before.weights),
                                                                                   acc(res.weights))
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


@pytest.mark.parametrize("arch,shape,needle", [("4x3", (1, 8, 8), "cannot read"),
                                               ("4c9", (1, 8, 8), "does not fit"),
                                               ("4c3", (1, 8), "input shape"),
                                               ("4c3-p2", (1, 8, 8), "ends with pooling")])
def test_bad_arch_or_input_shape_is_a_one_line_settings_error(arch, shape, needle):
    x = torch.zeros(3, 4, 64)
    with pytest.raises(SettingsError) as e:
        train_bptt_conv(x, torch.zeros(4, dtype=torch.long), arch, shape, LIFParams())
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_data_raise():
    x = torch.zeros(3, 4, 64)
    with pytest.raises(SettingsError):  # frames that are not of the input shape
        train_bptt_conv(torch.zeros(3, 4, 63), torch.zeros(4, dtype=torch.long), "4c3", (1, 8, 8), LIFParams())
    with pytest.raises(DataError):
        train_bptt_conv(x, torch.zeros(3, dtype=torch.long), "4c3", (1, 8, 8), LIFParams())
    with pytest.raises(DataError):
        train_bptt_conv(x, torch.zeros(4), "4c3", (1, 8, 8), LIFParams())
    with pytest.raises(SettingsError):
        train_bptt_conv(x, torch.zeros(4, dtype=torch.long), "4c3", (1, 8, 8), LIFParams(), val_frames=x)
