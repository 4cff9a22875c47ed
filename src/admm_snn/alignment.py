"""Tensors in memory aligned like torch's own allocations, so that products round the same in every run.

MKL picks its matrix-product kernels (and so the order of their additions, hence the rounding of the
result) partly by the memory alignment of the operands: the same float32 product of a tensor at a
64-byte boundary and of a copy 8 bytes further differ in the last bits (measured: (1800, 128) × (128, 10)
products on AVX-512 and AVX2 kernels alike). torch allocates CPU tensors at 64-byte boundaries, so every
tensor a run makes for itself is aligned the same way in every run; tensors read from files are not
(safetensors hands them out at the file's 8-byte offsets; numpy buffers at 16 bytes). A run that computes
on such a tensor — a resumed run on its checkpoint's state, a run on frames read from a cache — would not
repeat the arithmetic of a run that made the tensor itself. These helpers give every such input torch's
own alignment.
"""

from __future__ import annotations

import torch

ALIGNMENT = 64
"""Bytes: torch's CPU allocator alignment (and the widest vector register, AVX-512)."""


def fresh(t: torch.Tensor, device=None) -> torch.Tensor:
    """A contiguous copy of ``t`` in memory allocated by torch (on ``device``, default ``t``'s)."""
    out = torch.empty(t.shape, dtype=t.dtype, device=device if device is not None else t.device)
    out.copy_(t)
    return out


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when it is contiguous and starts at an :data:`ALIGNMENT`-byte boundary (or is not on
    the CPU), else :func:`fresh`."""
    if t.device.type != "cpu" or (t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0):
        return t
    return fresh(t)
