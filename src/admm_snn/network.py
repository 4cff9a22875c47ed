"""The LIF network: forward simulation and prediction (spec section 1).

Tensors are time-major: frames have shape ``(T, N, n_0)``; layer ``l`` potentials and spikes
``(T, N, n_l)``. Weights ``W_l`` have shape ``(n_l, n_{l-1})``; layers ``1..L-1`` are hidden LIF layers,
layer ``L`` is the leaky, non-spiking output.

    hidden:  z_{l,t} = δ z_{l,t-1} + W_l a_{l-1,t} − θ a_{l,t-1},   a_{l,t} = h(z_{l,t})
    output:  z_{L,t} = δ z_{L,t-1} + W_L a_{L-1,t}
    h(z) = 1 if z > θ else 0 (strict),  z_{·,0} = a_{·,0} = 0
    prediction = argmax z_{L,T}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import SettingsError


@dataclass(frozen=True)
class LIFParams:
    """Neuron parameters shared by every layer: leak ``delta`` in (0, 1], threshold ``theta`` > 0."""

    delta: float = 0.95
    theta: float = 1.0

    def __post_init__(self):
        if not (0.0 < self.delta <= 1.0):
            raise SettingsError(f"delta={self.delta} is outside (0, 1]; use a leak such as 0.95")
        if not (0.0 < self.theta < float("inf")):
            raise SettingsError(f"theta={self.theta} must be a finite number > 0; use a threshold such as 1.0")


def heaviside(z: torch.Tensor, theta: float) -> torch.Tensor:
    """h(z) = 1 if z > θ else 0 (strict), in the dtype of ``z``."""
    return (z > theta).to(z.dtype)


def lif_step(z_prev: torch.Tensor, a_prev: torch.Tensor, current: torch.Tensor, params: LIFParams):
    """One hidden-layer step: z = δ z_prev + current − θ a_prev, a = h(z). Returns ``(z, a)``."""
    z = params.delta * z_prev + current - params.theta * a_prev
    return z, heaviside(z, params.theta)


def leaky_step(z_prev: torch.Tensor, current: torch.Tensor, params: LIFParams) -> torch.Tensor:
    """One output-layer step: z = δ z_prev + current."""
    return params.delta * z_prev + current


@dataclass
class ForwardTrace:
    """Everything a forward simulation produced: potentials of layers 1..L, spikes of layers 1..L-1."""

    potentials: list[torch.Tensor]
    spikes: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        """Output potentials z_{L,t}, shape (T, N, n_L)."""
        return self.potentials[-1]


def check_shapes(weights: Sequence[torch.Tensor], frames: torch.Tensor) -> None:
    """Raise a one-line :class:`SettingsError` if ``frames`` and ``weights`` do not fit together."""
    if frames.dim() != 3:
        raise SettingsError(
            f"frames have shape {tuple(frames.shape)}; expected 3 dimensions (T, N, inputs)")
    if frames.shape[0] == 0:
        raise SettingsError("frames have 0 time steps; need T >= 1")
    prev = frames.shape[2]
    for i, w in enumerate(weights, start=1):
        if w.dim() != 2 or w.shape[1] != prev:
            raise SettingsError(
                f"weights of layer {i} have shape {tuple(w.shape)}; expected (n_{i}, {prev}) to follow "
                f"a layer of {prev} units")
        prev = w.shape[0]


def lif_recurrence(z: torch.Tensor, params: LIFParams, spikes: torch.Tensor | None = None):
    """Run the hidden-layer recurrence in place: on entry ``z`` holds the input currents W a_{l-1,t}
    (T, N, n); on return the potentials z_t = δ z_{t-1} + current_t − θ a_{t-1}. Returns the spikes
    a_t = h(z_t) (written into ``spikes`` when given). The same arithmetic, in the same order, as
    :func:`lif_step`, without a new tensor per step."""
    a = torch.empty_like(z) if spikes is None else spikes
    delta, theta = params.delta, params.theta
    for t in range(z.shape[0]):
        if t:
            z[t] += delta * z[t - 1]
            z[t] -= theta * a[t - 1]
        a[t].copy_(z[t] > theta)
    return a


def leaky_recurrence(z: torch.Tensor, params: LIFParams) -> torch.Tensor:
    """The output-layer recurrence in place: currents in, z_t = δ z_{t-1} + current_t out."""
    for t in range(1, z.shape[0]):
        z[t] += params.delta * z[t - 1]
    return z


def _forward(weights, frames, params, output: bool = True, current=None) -> ForwardTrace:
    """``current(l, inputs, W)``: layer l's currents (default ``inputs @ Wᵀ``; conv_network passes its
    convolutions)."""
    inputs = frames.to(weights[0].dtype)
    potentials, spikes = [], []
    for li, w in enumerate(weights):
        # (T, N, n_l): the currents, turned into potentials in place
        z = inputs @ w.T if current is None else current(li, inputs, w)
        if li < len(weights) - 1 or not output:
            inputs = lif_recurrence(z, params)
            spikes.append(inputs)
        else:
            leaky_recurrence(z, params)
        potentials.append(z)
    return ForwardTrace(potentials, spikes)


def forward(weights: Sequence[torch.Tensor], frames: torch.Tensor, params: LIFParams,
            chunk: int | None = None) -> ForwardTrace:
    """Simulate the network on ``frames`` (T, N, n_0) exactly (binary spikes, strict threshold).

    The input current of each layer is computed for all t at once (one matrix product per layer);
    only the recurrence over t is a loop, done in place in the current's buffer. ``frames`` may be
    stored compactly (uint8, bool): they are converted to the weights' dtype one chunk of ``chunk``
    samples at a time (None: all at once), which bounds the working memory to one chunk's worth.
    """
    check_shapes(weights, frames)
    return simulate(weights, frames, params, chunk)


def simulate(weights: Sequence[torch.Tensor], frames: torch.Tensor, params: LIFParams, chunk: int | None = None,
             output: bool = True, current=None) -> ForwardTrace:
    """The forward simulation of :func:`forward` without its shape check, ``chunk`` samples at a time
    (None: all): z_{l,t} = δ z_{l,t-1} + u_{l,t} − θ a_{l,t-1}, a_{l,t} = h(z_{l,t}), the last layer leaky
    (all layers LIF with ``output=False``). ``current(l, inputs, W)``: layer l's currents u_l (default
    ``inputs @ Wᵀ``; conv_network passes its convolutions)."""
    T, N = frames.shape[0], frames.shape[1]
    if chunk is None or chunk >= N:
        return _forward(weights, frames, params, output, current)
    potentials = spikes = None
    for s in range(0, N, chunk):
        tr = _forward(weights, frames[:, s:s + chunk], params, output, current)
        if potentials is None:
            potentials, spikes = ([torch.empty((T, N) + tuple(v.shape[2:]), dtype=v.dtype, device=v.device)
                                   for v in vs] for vs in (tr.potentials, tr.spikes))
        for buf, v in zip(potentials + spikes, tr.potentials + tr.spikes):
            buf[:, s:s + chunk] = v
    return ForwardTrace(potentials, spikes)


def predict(weights: Sequence[torch.Tensor], frames: torch.Tensor, params: LIFParams,
            chunk: int = 4096) -> torch.Tensor:
    """Class predictions argmax_k z_{L,T,k} for every sample, simulated in chunks of samples."""
    out = []
    for s in range(0, frames.shape[1], chunk):
        out.append(forward(weights, frames[:, s:s + chunk], params).output[-1].argmax(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def firing_rates(trace: ForwardTrace) -> list[float]:
    """Mean spikes per neuron per time step, for each hidden layer."""
    return [float(a.mean()) for a in trace.spikes]


def synaptic_operations(weights: Sequence[torch.Tensor], frames: torch.Tensor,
                        trace: ForwardTrace) -> float:
    """Synaptic operations per sample (energy proxy): Σ_l (number of input events to layer l) · n_l."""
    N = frames.shape[1]
    ops = float(frames.ne(0).sum()) * weights[0].shape[0]
    for a, w in zip(trace.spikes, weights[1:]):
        ops += float(a.sum()) * w.shape[0]
    return ops / max(N, 1)
