"""Surrogate-gradient BPTT baseline (snnTorch) on the same network that ADMM trains.

Architecture (identical to :mod:`admm_snn.network`): ``nn.Linear(bias=False)`` layers; every hidden
layer is an ``snntorch.Leaky(beta=δ, threshold=θ, reset_mechanism="subtract",
spike_grad=fast_sigmoid(slope))``; the output layer is an ``snntorch.Leaky(beta=δ,
reset_mechanism="none")`` whose membrane potential at the last step T is the logit vector (its spikes
are discarded). Loss: cross-entropy on ``z_{L,T}``; optimiser: Adam (optional coupled L2
``weight_decay`` as in ``torch.optim.Adam``).

Semantics: snnTorch ``Leaky`` versus ours (checked against the snnTorch 1.0 source and by
``tests/test_bptt.py``). With its default ``reset_delay=True`` one call does::

    reset = H(mem_prev − θ)               # detached; mem_prev is the potential returned last step
    mem   = β·mem_prev + I_t − θ·reset    # "subtract"
    spk   = H(mem − θ)                     # FastSigmoid forward: (mem − θ) > 0, i.e. strict
    # mem is NOT reduced after spk (the reset is delayed to the next call)

Because ``mem_prev`` is the unreduced potential of the previous step, ``reset`` equals that step's
spike ``a_{t-1}``; so ``mem = δ z_{t-1} + W a_{l-1,t} − θ a_{l,t-1}`` and ``spk = [z_t > θ]``: exactly
our hidden recurrence (same order of integration and reset, strict threshold, reset by the previous
step's spike, z_0 = a_0 = 0). For floats ``z − θ > 0`` ⇔ ``z > θ``, so the forward passes agree bit for
bit when the input currents agree. ``reset_mechanism="none"`` gives ``mem = β·mem_prev + I_t``, our
output integrator. ``beta`` is clamped to [0, 1], which δ ∈ (0, 1] already satisfies.

The differences are in the backward pass only: snnTorch detaches the reset term (no gradient flows
through ``−θ a_{t-1}``), and the Heaviside's derivative is replaced by the fast-sigmoid surrogate
``1 / (1 + k|z − θ|)²``. Neither changes the network that is evaluated: the returned weights are
the ``nn.Linear`` weights, already in our ``(n_l, n_{l-1})`` convention, and every accuracy in the
history that is called ``val_acc`` is computed with :func:`admm_snn.network.predict` on them.

Implementation note: each layer's input current is computed for all T steps at once (one matrix
product, as :func:`admm_snn.network.forward` does); only the membrane recurrence is a loop over t.

Convolutional architectures (:class:`BPTTConvNet`, :func:`train_bptt_conv`): the same neurons on the
currents of ``nn.Conv2d`` / ``nn.Linear`` layers (no bias) with the pooling of
:mod:`admm_snn.conv_network` folded into the next layer, so the forward pass is
:func:`admm_snn.conv_network.forward`'s; the training loop, settings and result are the dense ones.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from ..data.augment import checked_draw
from ..errors import DataError, DivergenceError, SettingsError
from ..network import LIFParams, predict

__all__ = ["BPTTSettings", "BPTTResult", "BPTTNet", "BPTTConvNet", "train_bptt", "train_bptt_conv"]


@dataclass(frozen=True)
class BPTTSettings:
    """Hyper-parameters of the BPTT baseline.

    Defaults were tuned a little, on a validation split only (stratified 800/200 of the 1,000 N-MNIST
    recordings in shared/data, 30 binary frames of 10 ms, 2312 inputs, δ = 0.95, θ = 1): with hidden
    (128,), lr 5e-3 beat 2e-3 and 1e-2 (mean best validation accuracy over 3 seeds 0.903 vs 0.898
    and 0.897 within 20 epochs); init_scale 2 was no better than 1. The same settings suit (128, 128).
    """

    epochs: int = 20
    lr: float = 5e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    surrogate_slope: float = 25.0  # k of snntorch.surrogate.fast_sigmoid
    seed: int = 0
    init_scale: float = 1.0  # weights ~ U(−s/√fan_in, s/√fan_in) (s = 1: PyTorch's Linear default)
    init_rate: float | None = None  # if set, rescale each hidden layer so it fires at this rate at the start

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise SettingsError(f"epochs={self.epochs!r} must be an integer >= 1, e.g. 30")
        if not (self.lr > 0.0 and self.lr < float("inf")):
            raise SettingsError(f"lr={self.lr!r} must be a finite number > 0, e.g. 2e-3")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise SettingsError(f"batch_size={self.batch_size!r} must be an integer >= 1, e.g. 64")
        if not (0.0 <= self.weight_decay < float("inf")):
            raise SettingsError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if not (0.0 < self.surrogate_slope < float("inf")):
            raise SettingsError(
                f"surrogate_slope={self.surrogate_slope!r} must be a finite number > 0, e.g. 25")
        if not isinstance(self.seed, int):
            raise SettingsError(f"seed={self.seed!r} must be an integer")
        if not (0.0 < self.init_scale < float("inf")):
            raise SettingsError(f"init_scale={self.init_scale!r} must be a finite number > 0, e.g. 1")
        if self.init_rate is not None and not (0.0 < self.init_rate < 1.0):
            raise SettingsError(f"init_rate={self.init_rate!r} must be in (0, 1) or unset, e.g. 0.08")


@dataclass
class BPTTResult:
    """What :func:`train_bptt` returns.

    ``weights``: float32 CPU tensors ``(n_l, n_{l-1})`` for :func:`admm_snn.network.forward`; those of
    the epoch with the best ``val_acc`` when validation data were given, else of the last epoch.
    ``history``: one dict per epoch with ``epoch`` (1-based), ``wall_s`` (cumulative training time,
    excluding validation), ``train_loss`` and ``train_acc`` (mean over the epoch's mini-batches, as
    they were trained) and ``val_acc`` (with :func:`admm_snn.network.predict`) if validation was given.
    ``wall_s``: total time of the call. ``peak_memory_bytes``: on CUDA, the peak of
    ``torch.cuda.max_memory_allocated`` during the call; on CPU, the growth of the process's peak
    resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) during the call (after importing snntorch),
    which is 0 when the call stayed below a peak the process had already reached.
    """

    weights: list[torch.Tensor]
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    peak_memory_bytes: int = 0
    best_epoch: Optional[int] = None


class BPTTNet(nn.Module):
    """The admm_snn network built from snnTorch parts (see the module docstring)."""

    def __init__(self, sizes: Sequence[int], params: LIFParams, surrogate_slope: float = 25.0):
        super().__init__()
        self.params = params
        self.fcs = nn.ModuleList(
            nn.Linear(sizes[i], sizes[i + 1], bias=False) for i in range(len(sizes) - 1))
        self._add_neurons(len(sizes) - 2, params, surrogate_slope)

    def _add_neurons(self, n_hidden: int, params: LIFParams, surrogate_slope: float) -> None:
        """The snnTorch neurons: ``n_hidden`` spiking Leaky layers and the non-resetting output Leaky."""
        import snntorch as snn
        from snntorch import surrogate

        spike_grad = surrogate.fast_sigmoid(slope=surrogate_slope)
        self.lifs = nn.ModuleList(
            snn.Leaky(beta=params.delta, threshold=params.theta, spike_grad=spike_grad,
                      reset_mechanism="subtract")
            for _ in range(n_hidden))
        self.out = snn.Leaky(beta=params.delta, threshold=params.theta, spike_grad=spike_grad,
                             reset_mechanism="none")

    def current(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """Layer ``l``'s input currents (T, N, n_l) from the layer below's spikes ``x`` (T, N, n_{l-1})."""
        return self.fcs[l](x)

    @classmethod
    def from_weights(cls, weights: Sequence[torch.Tensor], params: LIFParams,
                     surrogate_slope: float = 25.0) -> "BPTTNet":
        sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        net = cls(sizes, params, surrogate_slope)
        with torch.no_grad():
            for fc, w in zip(net.fcs, weights):
                fc.weight.copy_(w)
        return net

    def export_weights(self) -> list[torch.Tensor]:
        """Weights in admm_snn convention (n_l, n_{l-1}), float32, detached CPU copies."""
        return [fc.weight.detach().to("cpu", torch.float32).clone() for fc in self.fcs]

    def forward(self, frames: torch.Tensor, record: bool = False):
        """Run on time-major ``frames`` (T, N, n_0).

        Returns the output potentials (T, N, n_L); with ``record=True`` also the lists of hidden
        potentials and spikes, each (T, N, n_l).
        """
        x = frames
        T = x.shape[0]
        hid_z, hid_a = [], []
        for l, lif in enumerate(self.lifs):
            current = self.current(l, x)  # (T, N, n_l), all steps at once
            mem = torch.zeros_like(current[0])
            spikes, mems = [], []
            for t in range(T):
                spk, mem = lif(current[t], mem)
                spikes.append(spk)
                mems.append(mem)
            x = torch.stack(spikes)
            if record:
                hid_z.append(torch.stack(mems))
                hid_a.append(x)
        current = self.current(len(self.fcs) - 1, x)
        mem = torch.zeros_like(current[0])
        mems = []
        for t in range(T):
            _, mem = self.out(current[t], mem)
            mems.append(mem)
        out = torch.stack(mems)
        return (out, hid_z, hid_a) if record else out


class BPTTConvNet(BPTTNet):
    """The convolutional network of :mod:`admm_snn.conv_network` built from torch and snnTorch parts.

    One ``nn.Conv2d(bias=False)`` (stride, padding of the arch) per convolution and one
    ``nn.Linear(bias=False)`` per dense layer, the output layer last; the pooling before a layer is
    applied to its input as conv_network does (sum pooling: ``avg_pool2d`` × size², average pooling:
    ``avg_pool2d``), a dense layer after a convolution flattens the pooled spikes channel-major. The
    neurons are :class:`BPTTNet`'s snnTorch Leaky layers, so the forward pass is conv_network.forward's
    (bit for bit: the same torch operations on the same operands). ``self.fcs`` holds the weighted
    modules, whose weights are in conv_network's layout. Frames are flat (T, N, C·H·W).
    """

    def __init__(self, arch, input_shape, n_outputs: int, params: LIFParams, surrogate_slope: float = 25.0):
        nn.Module.__init__(self)
        from ..conv_network import network_layers
        self.params = params
        self.layers = network_layers(arch, input_shape, n_outputs)
        self.fcs = nn.ModuleList(_weighted_module(L) for L in self.layers)
        self._add_neurons(len(self.layers) - 1, params, surrogate_slope)

    @classmethod
    def from_weights(cls, arch, input_shape, weights: Sequence[torch.Tensor], params: LIFParams,
                     surrogate_slope: float = 25.0) -> "BPTTConvNet":
        """The network with conv_network-layout ``weights`` (e.g. from ``conv_network.init_weights``)."""
        from ..conv_network import check_weights, network_layers
        check_weights(network_layers(arch, input_shape, weights[-1].shape[0] if len(weights) else 1), weights)
        net = cls(arch, input_shape, weights[-1].shape[0], params, surrogate_slope)
        with torch.no_grad():
            for fc, w in zip(net.fcs, weights):
                fc.weight.copy_(w)
        return net

    def current(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """Layer ``l``'s currents (T, N, n_l): the module applied to pool(x) (x flat, (T, N, n_{l-1}))."""
        from ..conv_network import pool
        L = self.layers[l]
        lead = x.shape[:-1]
        if len(L.in_shape) == 3:
            x = pool(L.spatial(x), L.pool_size, L.pool_mode)
        if L.kind == "dense":
            x = x.reshape(-1, L.weight_shape[1])
        return self.fcs[l](x).reshape(tuple(lead) + (L.n_out,))


def _weighted_module(L) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Linear`` (no bias) for a :class:`admm_snn.conv_network.Layer`."""
    if L.kind == "conv":
        return nn.Conv2d(L.in_shape[0], L.out_shape[0], L.kernel, stride=L.stride, padding=L.padding, bias=False)
    return nn.Linear(L.weight_shape[1], L.n_out, bias=False)


def _check_data(frames, labels, what: str) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise DataError(f"{what} frames have shape {shape}; expected a tensor (T, N, inputs)")
    if frames.shape[0] == 0 or frames.shape[1] == 0:
        raise DataError(f"{what} frames have shape {tuple(frames.shape)}; need T >= 1 and N >= 1")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != frames.shape[1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise DataError(f"{what} labels have shape {shape}; expected ({frames.shape[1]},) to match "
                        f"the {frames.shape[1]} samples of the frames")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        raise DataError(f"{what} labels have dtype {labels.dtype}; expected integer class indices")
    if int(labels.min()) < 0:
        raise DataError(f"{what} labels contain {int(labels.min())}; class indices must be >= 0")


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024  # Linux reports KiB


def _classes(train_frames, train_labels, val_frames, val_labels, n_classes, inputs_like) -> tuple[bool, int]:
    """Check the data; return (validation given?, number of classes). ``inputs_like``: whether the
    validation frames must match the training frames' (T, ·, inputs)."""
    _check_data(train_frames, train_labels, "training")
    have_val = val_frames is not None or val_labels is not None
    if have_val:
        if val_frames is None or val_labels is None:
            raise SettingsError("give both val_frames and val_labels, or neither")
        _check_data(val_frames, val_labels, "validation")
        if inputs_like and (val_frames.shape[0] != train_frames.shape[0]
                            or val_frames.shape[2] != train_frames.shape[2]):
            raise DataError(f"validation frames have shape {tuple(val_frames.shape)}; expected "
                            f"(T, N, inputs) = ({train_frames.shape[0]}, N, {train_frames.shape[2]}) "
                            f"like the training frames")
    max_label = int(train_labels.max())
    if have_val:
        max_label = max(max_label, int(val_labels.max()))
    if n_classes is None:
        n_classes = max(max_label + 1, 2)
    elif n_classes <= max_label:
        raise SettingsError(f"n_classes={n_classes} but a label is {max_label}; "
                            f"n_classes must exceed every label")
    return have_val, n_classes


def _uniform_init(net: nn.Module, settings: BPTTSettings, gen: torch.Generator) -> None:
    """Weights ~ U(−s/√fan_in, s/√fan_in), drawn from ``gen`` in layer order (fan-in: C_in·k² for a kernel)."""
    with torch.no_grad():
        for fc in net.fcs:
            fan_in = fc.weight[0].numel()
            bound = settings.init_scale / fan_in ** 0.5
            fc.weight.copy_(torch.rand(fc.weight.shape, generator=gen) * (2 * bound) - bound)


def _calibrate(net: nn.Module, frames: torch.Tensor, params: LIFParams, rate: float, current=None) -> None:
    """Rescale each hidden layer so it fires at ``rate`` on ``frames`` (ADMM's init_rate start)."""
    from ..admm.state import calibrate_rates
    with torch.no_grad():
        scaled = calibrate_rates([fc.weight.detach().clone() for fc in net.fcs], frames, params, rate,
                                 current=current)
        for fc, w in zip(net.fcs, scaled):
            fc.weight.copy_(w)


def _start(device):
    """The device, whether it is CUDA, and the memory baselines (CUDA bytes, peak RSS)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    mem0 = 0
    if cuda:
        if not torch.cuda.is_available():
            raise SettingsError(f"device={device} but CUDA is not available; use device='cpu'")
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    import snntorch  # noqa: F401  (imported before the memory baseline so its import is not counted)

    return device, cuda, mem0, _peak_rss_bytes()


def train_bptt(train_frames: torch.Tensor, train_labels: torch.Tensor, hidden: Sequence[int],
               params: LIFParams, settings: BPTTSettings = BPTTSettings(),
               val_frames: Optional[torch.Tensor] = None, val_labels: Optional[torch.Tensor] = None,
               device="cpu", progress: bool = False, n_classes: Optional[int] = None,
               budget_s: Optional[float] = None, resample=None) -> BPTTResult:
    """Train the admm_snn network with surrogate-gradient BPTT (snnTorch) and Adam.

    ``train_frames`` (T, N, n_in), any numeric dtype (cast to float32 per batch; validation frames are
    kept as given and simulated in chunks); ``train_labels`` (N,) integer. ``hidden``: sizes of the
    hidden LIF layers (may be empty). ``n_classes`` defaults to 1 + the largest label seen. With
    validation data, the weights of the epoch with the best validation accuracy (first such epoch) are
    returned. Same seed, same data, same device → same weights on CPU (explicit generators for
    initialisation and shuffling; global RNGs are untouched).

    ``budget_s``: stop once the training time (mini-batches, without validation) has reached this many
    seconds, after the mini-batch that reached it; that last, partial epoch is validated and recorded
    like the others (its history entry has ``"partial": True`` and the number of mini-batches it ran).
    """
    t_start = time.perf_counter()
    have_val, n_classes = _classes(train_frames, train_labels, val_frames, val_labels, n_classes, True)
    hidden = [int(h) for h in hidden]
    if any(h < 1 for h in hidden):
        raise SettingsError(f"hidden={hidden} has a layer with < 1 neurons; give positive sizes")
    device, cuda, mem0, rss0 = _start(device)
    s = settings
    gen = torch.Generator().manual_seed(s.seed)
    net = BPTTNet([train_frames.shape[2], *hidden, n_classes], params, s.surrogate_slope)
    _uniform_init(net, s, gen)
    if s.init_rate is not None:  # the same data-driven start as ADMM's init_rate (deep nets stay alive)
        _calibrate(net, train_frames, params, s.init_rate)

    def evaluate(weights, frames):
        return predict(weights, frames, params)

    return _fit(net, train_frames, train_labels, s, gen, evaluate, (val_frames, val_labels) if have_val else None,
                device, cuda, mem0, rss0, t_start, progress, budget_s, resample)


def train_bptt_conv(train_frames: torch.Tensor, train_labels: torch.Tensor, arch, input_shape,
                    params: LIFParams, settings: BPTTSettings = BPTTSettings(),
                    val_frames: Optional[torch.Tensor] = None, val_labels: Optional[torch.Tensor] = None,
                    device="cpu", progress: bool = False, n_classes: Optional[int] = None,
                    budget_s: Optional[float] = None, resample=None) -> BPTTResult:
    """Train the convolutional network ``arch`` (e.g. ``"12c5-p2-32c5-p2-128"``, see
    :func:`admm_snn.arch.parse_arch`) on inputs of ``input_shape`` (C, H, W) with BPTT, like
    :func:`train_bptt` (same settings, seeding, budget, best-validation-epoch rule and result).

    Frames are (T, N, C·H·W) (channel-major, as :mod:`admm_snn.conv_network`) or (T, N, C, H, W).
    Initial weights ~ U(±init_scale/√fan-in), fan-in C_in·k² for a kernel and the pooled width for a
    matrix; ``init_rate`` rescales every hidden layer, convolutions included, with the conv currents.
    ``weights`` of the result are in conv_network's layout (kernels (C_out, C_in, k, k), then matrices),
    so ``conv_network.predict(arch, input_shape, result.weights, frames, params)`` evaluates them; every
    ``val_acc`` is computed that way.
    """
    from .. import conv_network as CN
    t_start = time.perf_counter()
    if not isinstance(train_frames, torch.Tensor):
        _check_data(train_frames, train_labels, "training")
    CN.network_layers(arch, input_shape, 1)  # a bad arch or input shape: a one-line SettingsError first
    train_frames = CN.flat_frames(train_frames, input_shape)
    if isinstance(val_frames, torch.Tensor):
        val_frames = CN.flat_frames(val_frames, input_shape)
    have_val, n_classes = _classes(train_frames, train_labels, val_frames, val_labels, n_classes, True)
    device, cuda, mem0, rss0 = _start(device)
    s = settings
    gen = torch.Generator().manual_seed(s.seed)
    net = BPTTConvNet(arch, input_shape, n_classes, params, s.surrogate_slope)
    _uniform_init(net, s, gen)
    if s.init_rate is not None:
        _calibrate(net, train_frames, params, s.init_rate, current=CN.currents(net.layers))

    def evaluate(weights, frames):
        return CN.predict(net.layers, input_shape, weights, frames, params)

    return _fit(net, train_frames, train_labels, s, gen, evaluate, (val_frames, val_labels) if have_val else None,
                device, cuda, mem0, rss0, t_start, progress, budget_s, resample)


def _fit(net, train_frames, train_labels, s: BPTTSettings, gen, evaluate, val, device, cuda, mem0, rss0,
         t_start, progress, budget_s, resample=None) -> BPTTResult:
    """The training loop shared by :func:`train_bptt` and :func:`train_bptt_conv`: Adam on the
    cross-entropy of z_{L,T}, shuffled mini-batches from ``gen``, ``evaluate(weights, frames)`` (class
    predictions) on the validation data ``val`` = (frames, labels) or None after every epoch.
    ``resample(k)`` (data augmentation, e.g. :class:`admm_snn.data.augment.ShiftResampler`): epoch k + 1
    trains on draw k of the training frames (epoch 1 on the frames themselves); its time is training time."""
    have_val = val is not None
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    N = train_frames.shape[1]
    labels_dev = train_labels.to(device=device, dtype=torch.long)
    if budget_s is not None and not (budget_s > 0):
        raise SettingsError(f"budget_s={budget_s!r} must be a number of seconds > 0, or None (no budget)")
    if have_val:  # kept in their own dtype (uint8 spikes stay compact): predict converts one chunk at a time
        val_x = val[0].to(device=device)
        val_y = val[1].to(device=device, dtype=torch.long)
    history: list[dict] = []
    best_acc, best_epoch, best_weights = -1.0, None, None
    train_time = 0.0
    epochs = range(1, s.epochs + 1)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(epochs, desc="bptt", unit="epoch")
        epochs = bar
    for epoch in epochs:
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(N, generator=gen)
        frames = train_frames if resample is None or epoch == 1 else checked_draw(resample, epoch - 1, train_frames)
        loss_sum, correct, seen, batches, spent = 0.0, 0, 0, 0, False
        for b in range(0, N, s.batch_size):
            if budget_s is not None and train_time + time.perf_counter() - t0 >= budget_s:
                spent = True
                break
            idx = perm[b:b + s.batch_size]
            x = frames[:, idx].to(device=device, dtype=torch.float32)
            y = labels_dev[idx.to(device)]
            logits = net(x)[-1]  # z_{L,T}
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise DivergenceError(f"BPTT loss became {float(loss)} in epoch {epoch}; "
                                      f"lower lr (now {s.lr}) or init_scale (now {s.init_scale})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            batches += 1
            if cuda and budget_s is not None:
                torch.cuda.synchronize(device)
        if cuda:
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        if batches == 0:  # the budget was spent before this epoch began
            break
        rec = dict(epoch=epoch, wall_s=train_time, train_loss=loss_sum / seen, train_acc=correct / seen)
        if spent or seen < N:
            rec.update(partial=True, batches=batches)
        if have_val:
            with torch.no_grad():
                pred = evaluate([fc.weight.detach() for fc in net.fcs], val_x)
            vacc = float((pred == val_y).float().mean())
            rec["val_acc"] = vacc
            if vacc > best_acc:
                best_acc, best_epoch, best_weights = vacc, epoch, net.export_weights()
        history.append(rec)
        if bar is not None:
            bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k not in ("epoch", "wall_s", "partial")})
        if spent:
            break
    if bar is not None:
        bar.close()
    if best_weights is None:
        best_weights, best_epoch = net.export_weights(), len(history)
    if cuda:
        peak = int(torch.cuda.max_memory_allocated(device) - mem0)
    else:
        peak = max(0, _peak_rss_bytes() - rss0)
    return BPTTResult(weights=best_weights, history=history, wall_s=time.perf_counter() - t_start,
                      peak_memory_bytes=peak, best_epoch=best_epoch)
