"""Architecture strings of convolutional LIF networks and the shapes they give (the bottom layer: it
imports nothing of the engine, so the network code and the ADMM engine both use it).

``12c5-p2-32c5-p2-128``: a convolution of 12 channels of 5×5 kernels, 2×2 sum pooling, 32 channels of
5×5, 2×2 pooling, a dense layer of 128; the dense leaky output layer follows as for dense networks.
A pooling layer is linear: it is folded into the operator of the layer after it (see
:mod:`admm_snn.conv_network`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SettingsError


# ----------------------------------------------------------------------------------------------------
# Architecture strings
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvSpec:
    """``{channels}c{kernel}`` (optionally ``s{stride}`` and ``p{padding}``): a convolutional LIF layer."""
    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class PoolSpec:
    """``p{size}`` (sum pooling) or ``a{size}`` (average pooling) over size×size windows, stride size."""
    size: int
    mode: str = "sum"


@dataclass(frozen=True)
class DenseSpec:
    """A plain number: a dense LIF layer of that width (the input is flattened before the first one)."""
    width: int


_CONV = re.compile(r"^(\d+)c(\d+)(?:s(\d+))?(?:p(\d+))?$")
_POOL = re.compile(r"^([pa])(\d+)$")


def parse_arch(text: str) -> list:
    """The hidden layers named by an architecture string such as ``12c5-p2-32c5-p2-128``: 12 channels of
    5×5 kernels, 2×2 sum pooling, 32 channels of 5×5, 2×2 pooling, a dense layer of 128 (the output layer
    follows as for dense networks). Convolutions and pooling come before the first dense layer; a pooling
    layer must be followed by a convolution or a dense layer. Bad strings are one-line errors naming the
    part."""
    parts = [p for p in str(text).strip().split("-")]
    if not parts or parts == [""]:
        raise SettingsError(f"architecture {text!r} is empty; expected e.g. 12c5-p2-32c5-p2-128")
    layers, dense_seen = [], False
    for part in parts:
        m, q = _CONV.match(part), _POOL.match(part)
        if part.isdigit():
            spec = DenseSpec(int(part))
            if spec.width < 1:
                raise SettingsError(f"architecture {text!r}: dense width {part!r} must be >= 1")
            dense_seen = True
        elif m:
            c, k, s, p = (int(g) if g is not None else None for g in m.groups())
            spec = ConvSpec(c, k, s or 1, p or 0)
            if c < 1 or k < 1 or spec.stride < 1:
                raise SettingsError(f"architecture {text!r}: {part!r} needs channels, kernel and stride >= 1")
        elif q:
            spec = PoolSpec(int(q.group(2)), "sum" if q.group(1) == "p" else "average")
            if spec.size < 1:
                raise SettingsError(f"architecture {text!r}: pooling size in {part!r} must be >= 1")
        else:
            raise SettingsError(f"architecture {text!r}: cannot read {part!r} (expected e.g. 12c5, p2, a2 or 128)")
        if dense_seen and not isinstance(spec, DenseSpec):
            raise SettingsError(f"architecture {text!r}: {part!r} comes after a dense layer; convolutions and "
                                f"pooling must come first")
        layers.append(spec)
    if isinstance(layers[-1], PoolSpec):
        raise SettingsError(f"architecture {text!r} ends with pooling; a convolution or dense layer must follow")
    return layers


def _positions(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output positions of a convolution along one axis: ⌊(size + 2·padding − kernel)/stride⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def check_input_shape(input_shape) -> tuple[int, int, int]:
    """``input_shape`` as a (C, H, W) tuple of positive integers, or a one-line error naming it."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise SettingsError(f"input shape {input_shape!r} must be (channels, height, width)") from None
    if len(shape) != 3 or min(shape) < 1:
        raise SettingsError(f"input shape {input_shape!r} must be three positive integers (channels, height, width)")
    return shape


def layer_shapes(layers, input_shape) -> list[tuple]:
    """The output shape of every entry of ``layers`` (from :func:`parse_arch`, or a string) on inputs of
    ``input_shape`` (C, H, W): (C_out, H', W') for a convolution, the pooled (C, ⌊H/p⌋, ⌊W/p⌋) for a
    pooling layer, (width,) for a dense layer. A kernel or pooling window larger than what it is applied
    to is a one-line error naming the layer."""
    if isinstance(layers, str):
        layers = parse_arch(layers)
    shape = check_input_shape(input_shape)
    out = []
    for i, spec in enumerate(layers, start=1):
        if isinstance(spec, ConvSpec):
            if len(shape) != 3:
                raise SettingsError(f"layer {i} ({spec.channels}c{spec.kernel}) follows a dense layer; "
                                    f"convolutions must come first")
            C, H, W = shape
            h, w = (_positions(H, spec.kernel, spec.stride, spec.padding),
                    _positions(W, spec.kernel, spec.stride, spec.padding))
            if h < 1 or w < 1:
                raise SettingsError(f"layer {i} ({spec.channels}c{spec.kernel}): kernel {spec.kernel} with padding "
                                    f"{spec.padding} does not fit its input of {H}x{W}")
            shape = (spec.channels, h, w)
        elif isinstance(spec, PoolSpec):
            C, H, W = shape
            if spec.size > H or spec.size > W:
                raise SettingsError(f"layer {i} (pooling {spec.size}x{spec.size}) does not fit its input of {H}x{W}")
            shape = (C, H // spec.size, W // spec.size)
        elif isinstance(spec, DenseSpec):
            shape = (spec.width,)
        else:
            raise SettingsError(f"layer {i} is {spec!r}; expected a ConvSpec, PoolSpec or DenseSpec")
        out.append(shape)
    return out


def size(shape) -> int:
    """The number of units of a layer of ``shape``."""
    n = 1
    for v in shape:
        n *= int(v)
    return n
