"""Export a trained network to NIR (the Neuromorphic Intermediate Representation, nir >= 1.0).

Graph
-----
``input → fc1 (Linear W1, no bias) → lif1 (LIF) → fc2 (Linear W2) → ... → fcL (Linear WL) → out (LIF with
v_threshold = +inf) → output``. Node names are ``fc{l}`` and ``lif{l}`` for l = 1..L-1 and ``fc{L}``, ``out``.
The graph's metadata records ``producer``, ``dt``, ``delta``, ``theta`` and ``reset``; every neuron node's
metadata records its ``role`` ("hidden" or "output") and ``reset``. Weights are written as float32, as
in model files.

Convolutional networks (:func:`to_nir_conv`)
--------------------------------------------
``input (C, H, W) → [pool1] → conv1 (Conv2d) → lif1 → … → [poolk] → flatten → fc → lif → … → fcL → out →
output``: the pooling that :mod:`conv_network` folds into a layer's operator becomes a ``SumPool2d``
(``p{k}``) or ``AvgPool2d`` (``a{k}``) node, kernel = stride = (k, k), before that layer's ``Conv2d`` (zero
bias) or before the ``Flatten`` (channel-major, as ``reshape``) that precedes the first dense layer. Neuron
nodes are those of dense graphs with parameters shaped like the layer's (C, H, W) units. snnTorch's importer
has no ``SumPool2d``, so :func:`import_snntorch` builds a ``torch.nn.Sequential`` of such graphs itself
(``nn.Conv2d``, :class:`SumPool2d`, ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear``, the corrected Leaky).

Leak and gain
-------------
NIR's LIF is ``tau dv/dt = (v_leak − v) + R I``. One forward-Euler step of width ``dt`` gives
``v_t = (1 − dt/tau) v_{t−1} + (R dt/tau) I_t`` (I_t = W_l a_{l−1,t}: the input of step t acts in step
t). With ``tau = dt / (1 − δ)`` and ``R = tau / dt`` this is our
``z_t = δ z_{t−1} + I_t`` (leak δ, unit input gain); ``v_leak = 0``. ``dt`` is the real time one of our
steps stands for (for N-MNIST models, the frame width): it only sets the unit of ``tau``. δ = 1 (no leak)
has no finite ``tau``; such graphs use NIR ``IF`` nodes (``dv/dt = R I``, ``R = 1/dt``).

The output layer never spikes and never resets: it is a LIF with an infinite threshold, which under the
NIR equations is exactly a leaky integrator (NIR ``LI``). ``LIF`` is used because snnTorch's importer has no
``LI`` node. Prediction = argmax of the output node's membrane potential at the last step.

Semantic differences (read before using the graph elsewhere)
------------------------------------------------------------
1. Reset. Ours is a soft reset applied in the *next* step, undecayed:
   ``z_{l,t} = δ z_{l,t−1} + W_l a_{l−1,t} − θ a_{l,t−1}`` (equivalently: subtract θ/δ right after the
   spike, then decay). NIR 1.0's LIF resets to ``v_reset`` immediately after a
   spike (``v ← v_reset``); it has no subtractive reset, and no recurrent linear edge can express one
   (the NIR reset is multiplicative). The exported LIF nodes carry ``v_reset = 0`` (NIR requires one) and
   ``metadata["reset"] = "subtract-threshold-next-step"``. A NIR consumer that ignores this metadata
   simulates reset-to-zero, which is a *different network* (spike trains and accuracy change).
   :func:`import_snntorch` applies the right reset.
2. Threshold. Ours is strict (spike iff z > θ). NIR's LIF is strict too (``v > v_thr``); so is snnTorch's
   forward (``(mem − threshold) > 0``, which for IEEE floats is the same as ``mem > threshold``, whatever
   snnTorch's ATan docstring says about ``≥``).
3. snnTorch's importer (``snntorch.import_from_nir``, snnTorch 1.0) does not reproduce our network as is:
   (a) it assumes ``dt = 1e-4`` whatever the graph says (``beta = 1 − 1e-4/tau``), so a graph written with
   another ``dt`` gets a wrong leak; (b) when ``R·1e-4/tau`` is not 1 it divides the threshold by that
   factor ("hack_w_scale"); (c) it builds ``snn.Leaky(reset_mechanism="zero", reset_delay=False)``: reset to
   zero right after the spike (NIR's reading) instead of our subtraction at the next step; (d) it returns
   the spikes of the last node, not its membrane potential; (e) it rejects IF nodes with ``R != 1`` and
   gives IF ``beta = 0.9``, so δ = 1 graphs cannot be imported.
   :func:`import_snntorch` calls ``snntorch.import_from_nir`` and then replaces every neuron module by
   ``snn.Leaky(beta = 1 − dt/tau`` with the graph's ``dt``, ``threshold = v_threshold``,
   ``reset_mechanism = "subtract"`` (hidden) or ``"none"`` (output), ``reset_delay = True)`` (a Leaky
   fixes its update function in ``__init__``; changing ``reset_mechanism`` on the imported module later
   has no effect on its dynamics). snnTorch's hidden update is then
   ``mem_t = (beta·mem_{t−1} + input_t) − H(mem_{t−1} − thr)·thr``, our equation term for term and in the
   same floating-point order. :func:`simulate_snntorch` reads the output membrane from the output module's
   ``mem`` after each step. With these, predictions and hidden spike counts equal
   :func:`admm_snn.network.predict` / :func:`admm_snn.network.forward` (tests/test_export.py checks it on
   real N-MNIST recordings).
4. Floating point. snnTorch computes the input current per step (``(N, n_in) @ Wᵀ``), ours for all steps at
   once (``(T·N, n_in) @ Wᵀ``); a BLAS may sum in another order, so potentials can differ in the last bit.
   A spike can only differ when a potential lies within rounding of θ; the test checks that this did not
   happen on its data rather than assuming it never can.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import SettingsError
from .network import LIFParams

#: snnTorch 1.0's importer hard-codes this time step.
SNNTORCH_IMPORT_DT = 1e-4
RESET = "subtract-threshold-next-step"
PRODUCER = "admm-snn"


def _nir():
    try:
        import nir
    except ImportError:  # pragma: no cover - depends on the environment
        raise SettingsError("NIR export needs the 'nir' package; install it with pip install 'admm-snn[export]'") from None
    return nir


def _check_weights(weights: Sequence) -> list[np.ndarray]:
    if len(weights) == 0:
        raise SettingsError("weights is empty; pass the list [W1, ..., WL] of a trained network")
    out, prev = [], None
    for i, w in enumerate(weights, start=1):
        w = torch.as_tensor(w).detach().cpu()
        if w.dim() != 2:
            raise SettingsError(f"W{i} has shape {tuple(w.shape)}; expected a 2-D matrix (n_out, n_in)")
        if prev is not None and w.shape[1] != prev:
            raise SettingsError(f"W{i} has shape {tuple(w.shape)}; expected (n_{i}, {prev}) to follow a layer "
                                f"of {prev} units")
        if not bool(torch.isfinite(w).all()):
            raise SettingsError(f"W{i} has NaN or infinite values; export a trained, finite network")
        prev = w.shape[0]
        out.append(w.to(torch.float32).numpy().copy())
    return out


def _check_lif(delta, theta, dt) -> tuple[float, float, float]:
    """δ, θ (validated by :class:`LIFParams`) and ``dt`` (a finite number > 0) as floats."""
    LIFParams(float(delta), float(theta))
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise SettingsError(f"dt={dt!r} must be a finite number of seconds > 0, e.g. 1e-3")
    return float(delta), float(theta), float(dt)


def _neuron(shape, role: str, delta: float, theta: float, dt: float):
    """The NIR neuron node of a layer of units ``shape`` (an int n, or (C, H, W)): LIF with
    ``tau = dt/(1 − δ)``, ``R = tau/dt``, ``v_leak = v_reset = 0``, ``v_threshold = θ`` (hidden) or +inf
    (output); IF with ``R = 1/dt`` when δ = 1. Every parameter has the layer's shape."""
    nir = _nir()
    thr = np.full(shape, theta if role == "hidden" else np.inf)
    meta = {"role": role, "reset": RESET if role == "hidden" else "none"}
    if delta == 1.0:
        return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=thr, v_reset=np.zeros(shape), metadata=meta)
    tau = dt / (1.0 - delta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape), v_threshold=thr,
                   v_reset=np.zeros(shape), metadata=meta)


def to_nir(weights: Sequence[torch.Tensor], delta: float, theta: float, dt: float = 1e-3):
    """The network ``weights = [W1, ..., WL]`` (``W_l``: (n_l, n_{l-1})) with leak ``delta`` and threshold
    ``theta`` as a ``nir.NIRGraph`` (see the module docstring for the mapping and its caveats)."""
    nir = _nir()
    LIFParams(float(delta), float(theta))  # validates δ and θ
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise SettingsError(f"dt={dt!r} must be a finite number of seconds > 0, e.g. 1e-3")
    ws = _check_weights(weights)
    delta, theta, dt = float(delta), float(theta), float(dt)
    L = len(ws)

    nodes = {"input": nir.Input(input_type={"input": np.array([ws[0].shape[1]])})}
    edges, prev = [], "input"
    for l, w in enumerate(ws, start=1):
        fc, cell = f"fc{l}", (f"lif{l}" if l < L else "out")
        nodes[fc] = nir.Linear(weight=w)
        nodes[cell] = _neuron(w.shape[0], "hidden" if l < L else "output", delta, theta, dt)
        edges += [(prev, fc), (fc, cell)]
        prev = cell
    nodes["output"] = nir.Output(output_type={"output": np.array([ws[-1].shape[0]])})
    edges.append((prev, "output"))
    meta = {"producer": PRODUCER, "dt": dt, "delta": delta, "theta": theta, "reset": RESET}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _conv_layers(arch, input_shape, weights: Sequence) -> tuple[list, list[np.ndarray]]:
    """The :class:`conv_network.Layer` records of ``arch`` on ``input_shape`` and the weights as float32
    arrays, or a one-line :class:`SettingsError` when they do not fit together."""
    from .conv_network import check_weights, network_layers
    if len(weights) == 0:
        raise SettingsError("weights is empty; pass the list of kernels and matrices of a trained conv network")
    ws = [torch.as_tensor(w).detach().cpu() for w in weights]
    if ws[-1].dim() != 2:
        raise SettingsError(f"the output layer's weights have shape {tuple(ws[-1].shape)}; expected (n_L, n_{{L-1}})")
    net = network_layers(arch, input_shape, int(ws[-1].shape[0]))
    check_weights(net, ws)
    for i, w in enumerate(ws, start=1):
        if not bool(torch.isfinite(w).all()):
            raise SettingsError(f"weights of layer {i} have NaN or infinite values; export a trained, finite network")
    return net, [w.to(torch.float32).numpy().copy() for w in ws]


def _pool_node(layer):
    """NIR ``SumPool2d`` (or ``AvgPool2d`` for average pooling) over non-overlapping p×p windows:
    kernel = stride = (p, p), padding (0, 0), as :func:`conv_network.pool`."""
    nir = _nir()
    p = np.array([layer.pool_size, layer.pool_size])
    cls = nir.SumPool2d if layer.pool_mode == "sum" else nir.AvgPool2d
    return cls(kernel_size=p, stride=p.copy(), padding=np.zeros(2, dtype=int))


def _layer_nodes(l: int, layer, w: np.ndarray, flat: bool) -> tuple[list[tuple[str, object]], bool]:
    """The NIR nodes of weighted layer ``l`` (1-based) before its neuron node, in order:
    [pool{l}] → conv{l} (Conv2d W, stride, padding, zero bias), or [pool{l}] → [flatten] → fc{l}
    (Linear W) for a dense layer; ``flatten`` (NIR ``Flatten`` of the pooled (C, H, W), channel-major like
    ``reshape``) comes before the first dense layer after convolutions. ``flat``: whether the input is
    already flat. Returns the nodes and whether this layer's output is flat."""
    nir = _nir()
    nodes = []
    if layer.pool_size > 1 and len(layer.in_shape) == 3:
        nodes.append((f"pool{l}", _pool_node(layer)))
    if layer.kind == "conv":
        C, H, W = layer.pooled_shape
        nodes.append((f"conv{l}", nir.Conv2d(input_shape=(H, W), weight=w, stride=layer.stride,
                                             padding=layer.padding, dilation=1, groups=1,
                                             bias=np.zeros(w.shape[0], dtype=np.float32))))
        return nodes, False
    if not flat:
        nodes.append(("flatten", nir.Flatten(input_type={"input": np.array(layer.pooled_shape)}, start_dim=0)))
    nodes.append((f"fc{l}", nir.Linear(weight=w)))
    return nodes, True


def to_nir_conv(arch, input_shape, weights: Sequence[torch.Tensor], delta: float, theta: float,
                dt: float = 1e-3):
    """The convolutional network ``arch`` (e.g. ``"12c5-p2-32c5-p2-128"``, see :func:`arch.parse_arch`) on
    inputs of ``input_shape`` (C, H, W), with ``weights`` as for :func:`conv_network.forward` (kernels
    (C_out, C_in, k, k), matrices (n_l, n_{l-1}), the output matrix last), as a ``nir.NIRGraph``.

    ``input (C, H, W) → [pool1] → conv1 → lif1 → [pool2] → conv2 → lif2 → … → [poolk] → flatten → fc →
    lif → … → fcL → out → output``: the pooling that :mod:`conv_network` folds into a layer's operator is
    its own ``SumPool2d`` / ``AvgPool2d`` node before that layer's ``Conv2d`` or ``Flatten``; a conv
    layer's neuron node has parameters of the layer's (C, H, W) shape. Neurons, leak and reset map as in
    :func:`to_nir` (module docstring); the graph's metadata also records ``arch`` and ``input_shape``."""
    nir = _nir()
    delta, theta, dt = _check_lif(delta, theta, dt)
    net, ws = _conv_layers(arch, input_shape, weights)
    in_shape = tuple(net[0].in_shape)
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges, prev, flat = [], "input", False
    for l, (layer, w) in enumerate(zip(net, ws), start=1):
        ops, flat = _layer_nodes(l, layer, w, flat)
        cell = f"lif{l}" if l < len(net) else "out"
        ops.append((cell, _neuron(tuple(layer.out_shape), "hidden" if l < len(net) else "output", delta, theta, dt)))
        for name, node in ops:
            nodes[name] = node
            edges.append((prev, name))
            prev = name
    nodes["output"] = nir.Output(output_type={"output": np.array(net[-1].out_shape)})
    edges.append((prev, "output"))
    arch_text = arch if isinstance(arch, str) else None
    meta = {"producer": PRODUCER, "dt": dt, "delta": delta, "theta": theta, "reset": RESET,
            "input_shape": list(in_shape)}
    if arch_text is not None:
        meta["arch"] = arch_text
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(graph, path: str | Path) -> None:
    """``nir.write`` to ``path``, atomically (temporary file in the same folder renamed into place)."""
    from .io import atomic_write
    nir = _nir()
    atomic_write(Path(path), lambda tmp: nir.write(tmp, graph))


def export_model(model: str | Path, out: str | Path, fmt: str = "nir", dt: float | None = None) -> dict:
    """Read a model written by ``admm-snn train`` and write it as ``fmt`` (only "nir") to ``out``: a dense
    model by :func:`to_nir`, a convolutional one (its file records ``arch`` and ``input_shape``) by
    :func:`to_nir_conv`. ``dt`` defaults to the model's frame width (N-MNIST ``bin_ms``) or 1 ms. Returns
    a short report."""
    from .io import load_model
    if fmt != "nir":
        raise SettingsError(f"--format {fmt!r} is not supported; use --format nir")
    m = load_model(Path(model))
    if dt is None:
        data = m["extra"].get("data") or {}
        bin_ms = data.get("bin_ms") if data.get("dataset") == "nmnist" else None
        dt = float(bin_ms) / 1000.0 if isinstance(bin_ms, (int, float)) and bin_ms > 0 else 1e-3
    if m.get("arch"):
        graph = to_nir_conv(m["arch"], m["input_shape"], m["weights"], m["delta"], m["theta"], dt)
    else:
        graph = to_nir(m["weights"], m["delta"], m["theta"], dt)
    write_nir(graph, out)
    report = {"out": str(out), "format": fmt, "sizes": m["sizes"], "dt": dt, "delta": m["delta"],
              "theta": m["theta"], "nodes": len(graph.nodes)}
    if m.get("arch"):
        report.update({"arch": m["arch"], "input_shape": list(m["input_shape"])})
    return report


def _neuron_nodes(graph) -> list[tuple[str, object]]:
    return [(k, v) for k, v in graph.nodes.items() if type(v).__name__ in ("LIF", "IF")]


def import_snntorch(graph):
    """``snntorch.import_from_nir(graph)`` with the corrections (module docstring, item 3) that make the
    imported network compute exactly our forward simulation. Returns the torch module."""
    from snntorch.import_nir import import_from_nir
    neurons = _neuron_nodes(graph)
    if any(type(n).__name__ == "IF" for _, n in neurons):
        raise SettingsError("snnTorch's NIR importer cannot load IF nodes (δ = 1): it requires R = 1 and "
                            "gives them beta = 0.9; export with δ < 1 for snnTorch")
    dt = float(graph.metadata.get("dt", SNNTORCH_IMPORT_DT))
    if _is_conv_graph(graph):
        return _import_chain(graph, dt)
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress and weight-scale warnings
        net = import_from_nir(graph)
    modules = dict(net.named_modules())
    for name, node in neurons:
        mod = modules.get(name)
        if not isinstance(mod, _snntorch().Leaky):
            raise SettingsError(f"snnTorch imported node {name!r} as {type(mod).__name__}, not Leaky")
        # A Leaky picks its update function in __init__, so the reset mechanism cannot be changed on the
        # imported module afterwards: build a fresh one with snnTorch's public constructor instead.
        setattr(net, name, _leaky(name, node, dt))
    return net


def _snntorch():
    import snntorch
    return snntorch


def _leaky(name: str, node, dt: float):
    """``snn.Leaky(beta = 1 − dt/tau, threshold = v_threshold, reset_mechanism = "subtract"`` (hidden) or
    ``"none"`` (output), ``reset_delay = True, init_hidden = True)``: our LIF equation (module docstring,
    item 3) for the NIR LIF node ``node``, whose tau and threshold must be the same for every neuron."""
    tau = np.unique(np.asarray(node.tau, dtype=np.float64))
    thr = np.unique(np.asarray(node.v_threshold, dtype=np.float64))
    if tau.size != 1 or thr.size != 1:
        raise SettingsError(f"node {name!r} has per-neuron tau or threshold; snnTorch needs one value per layer")
    hidden = node.metadata.get("reset") == RESET
    return _snntorch().Leaky(beta=1.0 - dt / float(tau[0]), threshold=float(thr[0]),
                             reset_mechanism="subtract" if hidden else "none", reset_delay=True, init_hidden=True)


_CONV_NODES = ("Conv2d", "SumPool2d", "AvgPool2d", "Flatten")


def _is_conv_graph(graph) -> bool:
    return any(type(n).__name__ in _CONV_NODES for n in graph.nodes.values())


class SumPool2d(torch.nn.AvgPool2d):
    """Sum pooling as torch's average pooling times the window's area, k_h·k_w (the same arithmetic as
    :func:`conv_network.pool`, so the sums are bitwise ours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else self.kernel_size
        return super().forward(x) * (kh * kw)


def _pool_module(name: str, node, cls):
    k, st, pad = (tuple(int(v) for v in np.atleast_1d(a)) for a in (node.kernel_size, node.stride, node.padding))
    if any(v != 0 for v in pad):
        raise SettingsError(f"pooling node {name!r} has padding {pad}; only unpadded pooling is supported")
    return cls(kernel_size=k, stride=st)


def _torch_module(name: str, node, dt: float):
    """The torch / snnTorch module of one NIR node of a conv graph: Conv2d → ``nn.Conv2d`` (bias only if
    non-zero), SumPool2d → :class:`SumPool2d`, AvgPool2d → ``nn.AvgPool2d``, Flatten → ``nn.Flatten``
    (its NIR dimensions exclude the batch: start_dim + 1), Linear / Affine → ``nn.Linear``, LIF →
    :func:`_leaky`."""
    kind = type(node).__name__
    if kind == "Conv2d":
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        bias = np.asarray(node.bias, dtype=np.float32)
        if isinstance(node.padding, str):
            raise SettingsError(f"conv node {name!r} has padding {node.padding!r}; give it as numbers")
        mod = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(node.stride),
                              padding=tuple(node.padding), dilation=tuple(node.dilation), groups=int(node.groups),
                              bias=bool(np.any(bias != 0)))
        mod.weight.data = w
        if mod.bias is not None:
            mod.bias.data = torch.as_tensor(bias)
        return mod
    if kind == "SumPool2d":
        return _pool_module(name, node, SumPool2d)
    if kind == "AvgPool2d":
        return _pool_module(name, node, torch.nn.AvgPool2d)
    if kind == "Flatten":
        end = int(node.end_dim)
        return torch.nn.Flatten(int(node.start_dim) + 1, end if end < 0 else end + 1)
    if kind in ("Linear", "Affine"):
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        mod = torch.nn.Linear(w.shape[1], w.shape[0], bias=kind == "Affine")
        mod.weight.data = w
        if kind == "Affine":
            mod.bias.data = torch.as_tensor(np.asarray(node.bias, dtype=np.float32))
        return mod
    if kind == "LIF":
        return _leaky(name, node, dt)
    raise SettingsError(f"node {name!r} is a NIR {kind}; a conv graph may hold Conv2d, SumPool2d, AvgPool2d, "
                        f"Flatten, Linear, Affine and LIF nodes")


def _chain(graph) -> list[str]:
    """The node names from ``input`` to ``output`` of a graph that is a single chain."""
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    order, name = [], "input"
    while name != "output":
        nxt = succ.get(name, [])
        if len(nxt) != 1 or nxt[0] in order:
            raise SettingsError(f"node {name!r} has {len(nxt)} successors; only chain graphs "
                                f"(input → … → output) can be imported")
        name = nxt[0]
        order.append(name)
    return order[:-1]


def _import_chain(graph, dt: float) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` of the chain graph's nodes in order, each module named as its node (so
    ``net.lif1`` is node ``lif1``'s Leaky). snnTorch's own importer is not used: it has no SumPool2d."""
    from collections import OrderedDict
    return torch.nn.Sequential(OrderedDict((k, _torch_module(k, graph.nodes[k], dt)) for k in _chain(graph)))


def simulate_snntorch(net, frames: torch.Tensor, graph) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run an imported network step by step on ``frames`` (T, N, n_0) from zero state. Returns the output
    membrane potentials (T, N, n_L) and the spikes of each hidden neuron node, each (T, N, n_l) (flat,
    in ``reshape`` order, also for conv layers). For a graph whose input node is (C, H, W), ``frames`` may
    be (T, N, C·H·W) or (T, N, C, H, W)."""
    import snntorch
    frames = _graph_frames(frames, graph)
    modules = dict(net.named_modules())
    neurons = _neuron_nodes(graph)
    hidden = [modules[k] for k, n in neurons if n.metadata.get("role") == "hidden"]
    outs = [modules[k] for k, n in neurons if n.metadata.get("role") == "output"]
    if len(outs) != 1:
        raise SettingsError("the graph has no single output neuron node (metadata role='output')")
    for m in modules.values():
        if isinstance(m, snntorch.Leaky):
            m.mem = torch.zeros(0)
    spikes: dict[int, list] = {id(m): [] for m in hidden}
    hooks = [m.register_forward_hook(lambda mod, inp, out: spikes[id(mod)].append(
        (out[0] if isinstance(out, tuple) else out).detach().clone())) for m in hidden]
    potentials = []
    try:
        with torch.no_grad():
            for t in range(frames.shape[0]):
                net(frames[t].to(torch.float32))
                potentials.append(outs[0].mem.detach().clone())
    finally:
        for h in hooks:
            h.remove()
    T, N = frames.shape[0], frames.shape[1]
    return (torch.stack(potentials).reshape(T, N, -1),
            [torch.stack(spikes[id(m)]).reshape(T, N, -1) for m in hidden])


def _graph_frames(frames: torch.Tensor, graph) -> torch.Tensor:
    """``frames`` shaped (T, N) + the graph's input shape: flat (T, N, C·H·W) frames are reshaped for a
    (C, H, W) input; anything else that does not fit is a one-line error."""
    shape = tuple(int(v) for v in np.atleast_1d(graph.nodes["input"].input_type["input"]))
    if frames.dim() >= 3 and tuple(frames.shape[2:]) == shape:
        return frames
    if frames.dim() == 3 and frames.shape[2] == int(np.prod(shape)):
        return frames.reshape(frames.shape[:2] + shape)
    raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N) + {shape} or "
                        f"(T, N, {int(np.prod(shape))}) for this graph's input")
