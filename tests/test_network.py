"""Tests of the LIF network (spec section 1): forward simulation, prediction, shape and parameter checks."""

import math

import pytest
import torch

from admm_snn.errors import SettingsError
from admm_snn.network import LIFParams, check_shapes, forward, heaviside, predict

DT = torch.float64


def test_hand_computed_lif_trace():
    """1 input -> 1 hidden LIF neuron -> 1 leaky output, every value worked out by hand (dyadic, exact).

    δ = 0.5, θ = 1, W1 = 1, W2 = 2, input x = 1, 1, 1, 1, 0, 1.
      t=1: z = 0.5·0      + 1 − 1·0 = 1        (= θ exactly: strict threshold, no spike)
      t=2: z = 0.5·1      + 1 − 1·0 = 1.5      spike
      t=3: z = 0.5·1.5    + 1 − 1·1 = 0.75     (soft reset by θ, using the previous step's spike)
      t=4: z = 0.5·0.75   + 1 − 1·0 = 1.375    spike
      t=5: z = 0.5·1.375  + 0 − 1·1 = −0.3125
      t=6: z = 0.5·(−0.3125) + 1 − 0 = 0.84375
    output u = 2a = 0, 2, 0, 2, 0, 0; z_L: 0, 2, 1, 2.5, 1.25, 0.625
    """
    params = LIFParams(delta=0.5, theta=1.0)
    frames = torch.tensor([1.0, 1, 1, 1, 0, 1], dtype=DT).reshape(6, 1, 1)
    w1 = torch.tensor([[1.0]], dtype=DT)
    w2 = torch.tensor([[2.0]], dtype=DT)
    tr = forward([w1, w2], frames, params)
    assert len(tr.potentials) == 2 and len(tr.spikes) == 1
    assert tr.potentials[0][:, 0, 0].tolist() == [1.0, 1.5, 0.75, 1.375, -0.3125, 0.84375]
    assert tr.spikes[0][:, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert tr.output[:, 0, 0].tolist() == [0.0, 2.0, 1.0, 2.5, 1.25, 0.625]
    assert tr.output is tr.potentials[-1]
    assert tr.potentials[0].dtype == DT and tr.spikes[0].dtype == DT


def test_strict_heaviside():
    z = torch.tensor([0.5, 1.0, 1.0 + 1e-12, 2.0], dtype=DT)
    assert heaviside(z, 1.0).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_output_only_network_and_predict_argmax():
    """No hidden layer: z_{L,t} = δ z_{L,t-1} + W x_t; predict = argmax z_{L,T}."""
    params = LIFParams(delta=0.5, theta=1.0)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    frames = torch.zeros(3, 2, 2, dtype=DT)
    frames[:, 0, 0] = 1.0              # sample 0: z_0 = 1, 1.5, 1.75 ; z_1 = 0
    frames[0, 1, 0] = 1.0              # sample 1: z_0 = 1, 0.5, 0.25 ...
    frames[2, 1, 1] = 1.0              # ... and z_1 = 0, 0, 1  -> class 1 at T
    tr = forward([w], frames, params)
    assert tr.spikes == []
    assert tr.output[:, 0, 0].tolist() == [1.0, 1.5, 1.75]
    assert tr.output[:, 1, :].tolist() == [[1.0, 0.0], [0.5, 0.0], [0.25, 1.0]]
    assert predict([w], frames, params).tolist() == [0, 1]


@pytest.mark.parametrize("chunk", [1, 2, 4096])
def test_predict_matches_forward_on_random_network(chunk):
    g = torch.Generator().manual_seed(5)
    params = LIFParams(delta=0.9, theta=1.0)
    weights = [torch.randn(4, 6, generator=g, dtype=DT) * 1.5, torch.randn(3, 4, generator=g, dtype=DT)]
    frames = (torch.rand(5, 7, 6, generator=g) < 0.5).to(DT)
    out = forward(weights, frames, params).output[-1]
    pred = predict(weights, frames, params, chunk=chunk)
    assert pred.dtype == torch.long
    assert torch.equal(pred, out.argmax(dim=1))
    assert predict(weights, frames[:, :0], params).numel() == 0


def _one_line_settings_error(fn):
    with pytest.raises(SettingsError) as exc:
        fn()
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_check_shapes_rejects_wrong_shapes_with_one_line_error():
    w = [torch.zeros(4, 6), torch.zeros(3, 4)]
    check_shapes(w, torch.zeros(5, 2, 6))  # fits
    _one_line_settings_error(lambda: check_shapes(w, torch.zeros(5, 6)))          # 2-D frames
    _one_line_settings_error(lambda: check_shapes(w, torch.zeros(0, 2, 6)))       # T = 0
    msg = _one_line_settings_error(lambda: check_shapes(w, torch.zeros(5, 2, 7)))  # wrong input size
    assert "layer 1" in msg
    msg = _one_line_settings_error(lambda: check_shapes([torch.zeros(4, 6), torch.zeros(3, 5)],
                                                        torch.zeros(5, 2, 6)))
    assert "layer 2" in msg
    _one_line_settings_error(lambda: check_shapes([torch.zeros(6)], torch.zeros(5, 2, 6)))  # 1-D weight
    _one_line_settings_error(lambda: forward(w, torch.zeros(5, 2, 7), LIFParams()))
    _one_line_settings_error(lambda: predict(w, torch.zeros(5, 2, 7), LIFParams()))


@pytest.mark.parametrize("delta", [0.0, -0.1, 1.0 + 1e-9, 1.5, math.nan, math.inf])
def test_lifparams_rejects_delta_outside_unit_interval(delta):
    _one_line_settings_error(lambda: LIFParams(delta=delta, theta=1.0))


@pytest.mark.parametrize("theta", [0.0, -1.0, math.nan, math.inf])
def test_lifparams_rejects_nonpositive_or_infinite_theta(theta):
    _one_line_settings_error(lambda: LIFParams(delta=0.9, theta=theta))


def test_lifparams_accepts_valid_values():
    p = LIFParams(delta=1.0, theta=0.25)
    assert (p.delta, p.theta) == (1.0, 0.25)
    LIFParams(delta=1e-6, theta=1e3)
