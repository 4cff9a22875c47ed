"""The variables of the relaxed problem: weights, per-sample potentials, spikes and the dual."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..network import LIFParams, forward


@dataclass
class ADMMState:
    """Weights ``W_l`` (n_l, n_{l-1}) for l = 1..L; per sample: ``potentials[l]`` z (T, N, n_l) for every
    layer, ``spikes[l]`` a (T, N, n_l) for hidden layers, ``dual`` λ (N, n_L) for the exact output
    constraint at t = T; ``iteration`` counts completed iterations; ``aux`` holds the variables of optional
    extensions (for example splitting variables and their duals)."""

    weights: list[torch.Tensor]
    potentials: list[torch.Tensor]
    spikes: list[torch.Tensor]
    dual: torch.Tensor
    iteration: int = 0
    aux: dict = field(default_factory=dict)
    """Extra variables of optional extensions (name → tensor), saved in checkpoints under ``aux.<name>``
    and restored on resume."""

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def layer_inputs(self, frames: torch.Tensor, l: int) -> torch.Tensor:
        """a_{l-1}: the frames for the first layer, else the spikes of the layer below (0-based l)."""
        return frames if l == 0 else self.spikes[l - 1]


def random_weights(sizes: list[int], gain: float, generator: torch.Generator, dtype, device) -> list[torch.Tensor]:
    """W_l with entries N(0, (gain / sqrt(n_{l-1}))²); the output layer uses gain 1."""
    ws = []
    for l in range(1, len(sizes)):
        g = gain if l < len(sizes) - 1 else 1.0
        w = torch.randn(sizes[l], sizes[l - 1], generator=generator, dtype=torch.float64) * (g / sizes[l - 1] ** 0.5)
        ws.append(w.to(dtype=dtype, device=device))
    return ws


def identity_layers(weights: list[torch.Tensor], gain: float, noise: float,
                    generator: torch.Generator) -> list[torch.Tensor]:
    """Hidden layers 2..L-1 set near the identity: W_l = gain·I + noise·N(0, 1/n_{l-1}) (I the
    rectangular identity when widths differ). With gain a little above θ (and no noise) a layer copies
    the spike train of the layer below, so the deep network computes what its first layer computes
    (layer-by-layer growth: every layer after the first is inserted as a copy)."""
    weights = list(weights)
    for l in range(1, len(weights) - 1):
        W = weights[l]
        n_out, n_in = W.shape
        r = torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) * (noise / n_in ** 0.5)
        r += gain * torch.eye(n_out, n_in, dtype=torch.float64)
        weights[l] = r.to(dtype=W.dtype, device=W.device)
    return weights


def state_from_forward(weights: list[torch.Tensor], frames: torch.Tensor, params: LIFParams) -> tuple[list, list]:
    """Potentials and spikes of the exact forward simulation (states that satisfy every constraint)."""
    trace = forward(weights, frames, params)
    return trace.potentials, trace.spikes


def uniform_state(sizes, T, N, generator, dtype, device):
    """The paper's start: z and a uniform in [0, 1) for every layer (a for hidden layers only)."""
    pots = [torch.rand(T, N, n, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
            for n in sizes[1:]]
    spikes = [torch.rand(T, N, n, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
              for n in sizes[1:-1]]
    return pots, spikes


def _lif_spike_sum(current: torch.Tensor, params: LIFParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes of a hidden LIF layer driven by ``current`` (T, N, n), and their total."""
    from ..network import lif_step
    z = torch.zeros_like(current[0])
    a = torch.zeros_like(current[0])
    out = torch.empty_like(current)
    for t in range(current.shape[0]):
        z, a = lif_step(z, a, current[t], params)
        out[t] = a
    return out, out.sum()


def calibrate_rates(weights: list[torch.Tensor], frames: torch.Tensor, params: LIFParams, target: float,
                    reduce=lambda t: t, steps: int = 14, chunk: int | None = None,
                    current=None, keep=()) -> list[torch.Tensor]:
    """Scale each hidden layer's random weights, bottom up, so that its mean firing rate on the training
    data is ``target`` (data-driven initialisation, in the spirit of LSUV): the input current W a is
    linear in the scale, so it is computed once per layer (``chunk`` samples at a time, so compact
    frames are converted one chunk at a time) and the scale found by bisection on the rate, whose spike
    and unit counts are summed over processes with ``reduce`` (every process finds the same scale).
    Spike counts are integers summed in float64 per chunk: exact. The output layer is left as drawn.
    ``current(l, inputs, W)``: layer l's current (default ``inputs @ Wᵀ``; conv_solver passes its
    convolutions). Hidden layers whose index is in ``keep`` (copy layers) keep their weights (scale 1);
    the layers above see their spikes."""
    weights = list(weights)
    T, N = frames.shape[0], frames.shape[1]
    step = max(1, chunk or N)
    # N = 0 (a process without calibration samples) still takes part in the reductions
    slices = [slice(s, min(s + step, N)) for s in range(0, N, step)] or [slice(0, 0)]
    inputs = frames
    for l in range(len(weights) - 1):
        W = weights[l]
        base = None
        for sl in slices:
            u = inputs[:, sl].to(W.dtype) @ W.T if current is None else current(l, inputs[:, sl].to(W.dtype), W)
            if base is None:
                base = torch.empty(T, N, u.shape[2], dtype=W.dtype, device=W.device)
            base[:, sl] = u
            del u
        count = reduce(torch.tensor(float(base.numel()), dtype=torch.float64, device=base.device))

        def rate(scale: float) -> float:
            total = sum(_lif_spike_sum(base[:, sl] * scale, params)[1].double() for sl in slices)
            return float(reduce(total) / count)

        if l in keep:
            scale = 1.0
        else:
            lo, hi = 0.0, 1.0
            while rate(hi) < target and hi <= 1e4:  # grow the bracket until the rate reaches the target
                lo, hi = hi, hi * 2.0
            for _ in range(steps):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if rate(mid) < target else (lo, mid)
            scale = 0.5 * (lo + hi)
            weights[l] = W * scale
        spikes = torch.empty(T, N, base.shape[2], dtype=torch.uint8, device=W.device)
        for sl in slices:
            spikes[:, sl] = _lif_spike_sum(base[:, sl] * scale, params)[0].to(torch.uint8)
        inputs = spikes
        del base
    return weights
