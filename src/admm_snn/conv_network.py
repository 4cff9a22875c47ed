"""Convolutional LIF networks: forward simulation and prediction (the same neurons as :mod:`network`).

A network is an architecture (:func:`arch.parse_arch`, e.g. ``12c5-p2-32c5-p2-128``), the shape
(C, H, W) of its inputs and one weight tensor per weighted layer: a kernel (C_out, C_in, k, k) for a
convolution, a matrix (n_l, n_{l-1}) for a dense layer, then the dense leaky output layer (n_L, n_{L-1}).
Pooling is linear, so it is folded into the operator of the layer after it:

    conv:   u_{l,t} = W_l ∗ pool(a_{l-1,t})              (2-D cross-correlation, stride, zero padding)
    dense:  u_{l,t} = W_l flatten(pool(a_{l-1,t}))
    hidden: z_{l,t} = δ z_{l,t-1} + u_{l,t} − θ a_{l,t-1},   a_{l,t} = h(z_{l,t})
    output: z_{L,t} = δ z_{L,t-1} + W_L flatten(a_{L-1,t})
    prediction = argmax z_{L,T}

exactly :func:`network.lif_recurrence` and :func:`network.leaky_recurrence` on the currents. Every
state is kept flat, (T, N, C·H·W) in the channel-major order of ``reshape`` (so a conv layer's spikes
are a dense layer's spikes to every element-wise formula); the operators reshape to (T·N, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .arch import ConvSpec, DenseSpec, PoolSpec, check_input_shape, layer_shapes, parse_arch, size
from .errors import SettingsError
from .network import ForwardTrace, LIFParams
from .network import simulate


def pool(a: torch.Tensor, size: int, mode: str = "sum") -> torch.Tensor:
    """Sum (or average) over non-overlapping size×size windows; size 1: the identity."""
    if size == 1:
        return a
    s = F.avg_pool2d(a, size, stride=size)
    return s * (size * size) if mode == "sum" else s


def conv_forward(a: torch.Tensor, W: torch.Tensor, stride: int = 1, padding: int = 0, pool_size: int = 1,
                 pool_mode: str = "sum") -> torch.Tensor:
    """u = A a = W ∗ pool(a): the currents (B, C_out, H', W') of a convolutional layer."""
    return F.conv2d(pool(a, pool_size, pool_mode), W, stride=stride, padding=padding)


@dataclass(frozen=True)
class Layer:
    """One weighted layer: a convolution (``kind="conv"``) or a dense layer (``"dense"``), with the
    pooling before it (``pool_size`` 1: none) folded into its operator. ``in_shape`` is the shape of
    the layer below's spikes (or of the input), before pooling; ``out_shape`` that of its own units."""

    kind: str
    in_shape: tuple
    out_shape: tuple
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    pool_size: int = 1
    pool_mode: str = "sum"

    @property
    def n_in(self) -> int:
        return size(self.in_shape)

    @property
    def n_out(self) -> int:
        return size(self.out_shape)

    @property
    def pooled_shape(self) -> tuple:
        """The shape of pool(a_{l-1}) (the input shape when there is no pooling)."""
        if self.pool_size == 1 or len(self.in_shape) != 3:
            return tuple(self.in_shape)
        C, H, W = self.in_shape
        return (C, H // self.pool_size, W // self.pool_size)

    @property
    def weight_shape(self) -> tuple:
        if self.kind == "conv":
            return (self.out_shape[0], self.in_shape[0], self.kernel, self.kernel)
        return (self.n_out, size(self.pooled_shape))

    def spatial(self, a: torch.Tensor) -> torch.Tensor:
        """Flat spikes (..., n_in) as (B, C, H, W) images (B = the product of the leading dimensions)."""
        return a.reshape((-1,) + tuple(self.in_shape))

    def pooled(self, a: torch.Tensor) -> torch.Tensor:
        """pool(a_{l-1}) flattened, (B, n_pooled): what a dense layer's weights multiply."""
        if self.pool_size == 1 or len(self.in_shape) != 3:
            return a.reshape(-1, self.n_in)
        return pool(self.spatial(a), self.pool_size, self.pool_mode).reshape(-1, size(self.pooled_shape))

    def current(self, a: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """u = A_l(W) a: the currents (..., n_out) of flat inputs a (..., n_in) (any leading dimensions)."""
        lead = a.shape[:-1]
        if self.kind == "conv":
            u = conv_forward(self.spatial(a), W, self.stride, self.padding, self.pool_size, self.pool_mode)
        else:
            u = self.pooled(a) @ W.T
        return u.reshape(tuple(lead) + (self.n_out,))


def network_layers(layers, input_shape, n_outputs: int) -> list[Layer]:
    """The weighted layers of the network ``layers`` (an architecture string, the list of
    :func:`arch.parse_arch`, or already a list of :class:`Layer`, returned as it is) on inputs of
    ``input_shape`` (C, H, W), ending with the dense output layer of ``n_outputs`` units."""
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(x, Layer) for x in layers):
        return list(layers)
    if isinstance(layers, str):
        layers = parse_arch(layers)
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        raise SettingsError(f"the output layer's width {n_outputs!r} must be an integer >= 1")
    shape = check_input_shape(input_shape)
    shapes = layer_shapes(layers, shape)
    out, pending = [], None
    for spec, out_shape in zip(layers, shapes):
        if isinstance(spec, PoolSpec):
            if pending is not None:
                raise SettingsError(f"two pooling layers in a row ({pending.size} and {spec.size}); use one of "
                                    f"size {pending.size * spec.size}")
            pending = spec
            continue
        p = (pending.size, pending.mode) if pending is not None else (1, "sum")
        if isinstance(spec, ConvSpec):
            out.append(Layer("conv", shape, out_shape, spec.kernel, spec.stride, spec.padding, *p))
        else:
            out.append(Layer("dense", shape, out_shape, pool_size=p[0], pool_mode=p[1]))
        pending = None
        shape = out_shape
    out.append(Layer("dense", shape, (n_outputs,)))
    return out


def output_shapes(layers, input_shape, n_outputs: int) -> list[tuple]:
    """The shape of every weighted layer's units, the output layer last: for ``12c5-p2-32c5-p2-128`` on
    2×34×34 with 10 classes, (12, 30, 30), (32, 11, 11), (128,), (10,)."""
    return [L.out_shape for L in network_layers(layers, input_shape, n_outputs)]


def init_weights(layers, input_shape, n_outputs: int, gain: float, generator: torch.Generator,
                 dtype=torch.float32, device=None) -> list[torch.Tensor]:
    """Random weights, drawn in float64 in layer order like :func:`admm.state.random_weights`: entries
    N(0, (g / sqrt(fan-in))²), fan-in = C_in·k² for a kernel and n_{l-1} (after pooling) for a matrix,
    g = ``gain`` for hidden layers and 1 for the output layer (an all-dense architecture draws exactly
    the dense network's weights)."""
    if not (gain > 0) or gain == float("inf"):
        raise SettingsError(f"gain={gain} must be a finite number > 0")
    net = network_layers(layers, input_shape, n_outputs)
    ws = []
    for i, L in enumerate(net):
        shape = L.weight_shape
        fan_in = size(shape[1:])
        g = gain if i < len(net) - 1 else 1.0
        w = torch.randn(shape, generator=generator, dtype=torch.float64) * (g / fan_in ** 0.5)
        ws.append(w.to(dtype=dtype, device=device))
    return ws


def copy_layers(net: list[Layer]) -> list[int]:
    """Indices of the hidden layers after the first that can start as a copy of the layer below
    (``deep_init="identity"``): convolutions with as many output as input channels, an odd kernel and
    stride 1, and dense layers as wide as their (pooled) input. The output layer never is one."""
    out = []
    for i, L in enumerate(net[1:-1], start=1):
        if L.kind == "conv" and L.out_shape[0] == L.in_shape[0] and L.kernel % 2 == 1 and L.stride == 1:
            out.append(i)
        elif L.kind == "dense" and L.n_out == size(L.pooled_shape):
            out.append(i)
    return out


def identity_weight(L: Layer, gain: float, noise: float = 0.0, generator: torch.Generator | None = None,
                    dtype=torch.float32, device=None) -> torch.Tensor:
    """The weights of a copy layer (:func:`copy_layers`): g at the centre tap of each channel onto itself,
    W[c, c, k//2, k//2] = g (a convolution), or W = g·I (dense), with g = ``gain`` × pool_size² under
    average pooling (so that one spike in the window counts as under sum pooling), plus
    ``noise``·N(0, 1/fan-in) (drawn from ``generator`` in float64 when noise > 0). Unit (c, i, j) then
    receives g·pool(a_{l-1})(c, i + k//2 − p, j + k//2 − p): with g a little above θ and no pooling its
    spike train is that of the unit below (tests/test_conv_network.py), as :func:`admm.state.identity_layers`
    does for dense networks."""
    g = gain * (L.pool_size ** 2 if L.pool_mode == "average" and L.pool_size > 1 and len(L.in_shape) == 3 else 1)
    shape = L.weight_shape
    w = torch.zeros(shape, dtype=torch.float64)
    if L.kind == "conv":
        c = torch.arange(shape[0])
        w[c, c, L.kernel // 2, L.kernel // 2] = g
    else:
        w += g * torch.eye(shape[0], shape[1], dtype=torch.float64)
    if noise > 0:
        w += torch.randn(shape, generator=generator, dtype=torch.float64) * (noise / size(shape[1:]) ** 0.5)
    return w.to(dtype=dtype, device=device)


def check_weights(net: list[Layer], weights: Sequence[torch.Tensor]) -> None:
    """A one-line :class:`SettingsError` if the weights do not fit the layers."""
    if len(weights) != len(net):
        raise SettingsError(f"{len(weights)} weight tensors for a network of {len(net)} weighted layers "
                            f"(the output layer included)")
    for i, (L, w) in enumerate(zip(net, weights), start=1):
        if tuple(w.shape) != tuple(L.weight_shape):
            raise SettingsError(f"weights of layer {i} have shape {tuple(w.shape)}; expected {tuple(L.weight_shape)}")


def flat_frames(frames: torch.Tensor, input_shape) -> torch.Tensor:
    """Frames (T, N, C·H·W) or (T, N, C, H, W) as (T, N, C·H·W) (a view), checked against ``input_shape``."""
    shape = check_input_shape(input_shape)
    if frames.dim() == 5 and tuple(frames.shape[2:]) == shape:
        return frames.reshape(frames.shape[0], frames.shape[1], -1)
    if frames.dim() != 3 or frames.shape[2] != size(shape):
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N, {size(shape)}) or "
                            f"(T, N, {', '.join(map(str, shape))}) for inputs of shape {shape}")
    if frames.shape[0] == 0:
        raise SettingsError("frames have 0 time steps; need T >= 1")
    return frames


def currents(net):
    """``current(l, inputs, W)`` of the layers ``net`` for :func:`network.simulate`."""
    return lambda l, inputs, W: net[l].current(inputs, W)


def forward(layers, input_shape, weights: Sequence[torch.Tensor], frames: torch.Tensor, params: LIFParams,
            chunk: int | None = None) -> ForwardTrace:
    """Simulate the convolutional network exactly (binary spikes, strict threshold) on ``frames``
    (T, N, C·H·W) or (T, N, C, H, W): each layer's currents for all t at once, then the recurrence over
    t in place (:func:`network.lif_recurrence`). Potentials and spikes come back flat, (T, N, n_l).
    ``chunk``: simulate that many samples at a time (None: all)."""
    net = network_layers(layers, input_shape, weights[-1].shape[0] if len(weights) else 1)
    check_weights(net, weights)
    return simulate(weights, flat_frames(frames, net[0].in_shape), params, chunk, current=currents(net))


def predict(layers, input_shape, weights: Sequence[torch.Tensor], frames: torch.Tensor, params: LIFParams,
            chunk: int = 1024) -> torch.Tensor:
    """Class predictions argmax_k z_{L,T,k} for every sample, simulated in chunks of samples."""
    net = network_layers(layers, input_shape, weights[-1].shape[0] if len(weights) else 1)
    frames = flat_frames(frames, net[0].in_shape)
    out = []
    for s in range(0, frames.shape[1], chunk):
        out.append(forward(net, input_shape, weights, frames[:, s:s + chunk], params).output[-1].argmax(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy_and_rates(layers, input_shape, weights: Sequence[torch.Tensor], frames: torch.Tensor,
                       labels: torch.Tensor, params: LIFParams, chunk: int = 512) -> tuple[float, list[float]]:
    """Accuracy of the forward simulation's predictions on (``frames``, ``labels``) and the mean firing
    rate of every hidden layer (spikes per unit and time step), simulated ``chunk`` samples at a time."""
    net = network_layers(layers, input_shape, weights[-1].shape[0] if len(weights) else 1)
    frames = flat_frames(frames, net[0].in_shape)
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != frames.shape[1]:
        raise SettingsError(f"labels have shape {tuple(labels.shape)}; expected ({frames.shape[1]},), one per sample")
    N = frames.shape[1]
    if N == 0:
        raise SettingsError("no samples to evaluate")
    correct, sums = 0, [0.0] * (len(net) - 1)
    for s in range(0, N, chunk):
        trace = forward(net, input_shape, weights, frames[:, s:s + chunk], params)
        pred = trace.output[-1].argmax(dim=1)
        correct += int((pred == labels[s:s + chunk].to(pred.device)).sum())
        for l, a in enumerate(trace.spikes):
            sums[l] += float(a.to(torch.float64).mean(dim=(0, 2)).sum())
    return correct / N, [v / N for v in sums]
