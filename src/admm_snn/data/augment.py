"""Shift augmentation: the training frames moved by a random whole-pixel offset per sample, redrawn
at every re-projection of an ADMM run (``train(resample=...)``).

For a sample with offset (dy, dx) ∈ [−s, s]², every time step of its frames is moved on the sensor
grid (C, H, W), zero fill where it enters from outside:

    x'_{t, c, i, j} = x_{t, c, i − dy, j − dx}   (0 where i − dy or j − dx is off the grid)

The offsets of draw k are a pure function of (seed, k), so a resumed run redraws the frames of the
iteration it resumes from bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import SettingsError


def shift_frames(frames: torch.Tensor, offsets: torch.Tensor, shape, max_shift: int) -> torch.Tensor:
    """Time-major frames (T, N, C·H·W) with sample i moved by ``offsets[i] = (dy, dx)``, |dy|, |dx| ≤ s."""
    T, N, n = frames.shape
    C, H, W = (int(v) for v in shape)
    if C * H * W != n:
        raise SettingsError(f"augment shape {tuple(shape)} has {C * H * W} inputs but the frames have {n}")
    s = int(max_shift)
    grid = F.pad(frames.reshape(T * N, C, H, W), (s, s, s, s)).view(T, N, C, H + 2 * s, W + 2 * s)
    out = torch.empty_like(frames).view(T, N, C, H, W)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            idx = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
            if idx.numel():
                # out[i, j] = x[i - dy, j - dx] = grid[i - dy + s, j - dx + s]
                out[:, idx] = grid[:, idx, :, s - dy:s - dy + H, s - dx:s - dx + W]
    return out.view(T, N, n)


def checked_draw(resample, k: int, frames: torch.Tensor) -> torch.Tensor:
    """``resample(k)``, refused with one line unless it is a tensor of ``frames``' shape."""
    new = resample(k)
    if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(frames.shape):
        shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise SettingsError(f"resample({k}) returned {shape}; the training frames are {tuple(frames.shape)}")
    return new


@dataclass(frozen=True)
class ShiftResampler:
    """``resampler(k)``: the frames of draw k ≥ 1, each sample moved by its own uniform random offset in
    [−max_shift, max_shift]² (seeded by ``seed`` and k; draw 0 would be the frames themselves).

    ``frames``: the fixed time-major training frames (T, N, C·H·W); ``shape``: (C, H, W)."""

    frames: torch.Tensor
    shape: tuple
    max_shift: int = 1
    seed: int = 0

    def __post_init__(self):
        if int(self.max_shift) < 1:
            raise SettingsError(f"augment shift must be at least 1 pixel, got {self.max_shift}")
        C, H, W = (int(v) for v in self.shape)
        if 2 * int(self.max_shift) >= min(H, W):
            raise SettingsError(f"augment shift {self.max_shift} is too large for {H}x{W} frames")

    @property
    def key(self) -> str:
        """What a checkpoint records of this augmentation (a resume must use the same)."""
        return f"shift{int(self.max_shift)}-seed{int(self.seed)}"

    def offsets(self, k: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(k))
        s = int(self.max_shift)
        return torch.randint(-s, s + 1, (int(self.frames.shape[1]), 2), generator=gen)

    def __call__(self, k: int) -> torch.Tensor:
        if int(k) == 0:
            return self.frames.clone()
        return shift_frames(self.frames, self.offsets(k), self.shape, self.max_shift)
