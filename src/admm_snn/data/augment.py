"""Shift augmentation: the training frames moved by a random whole-pixel offset per sample, redrawn
at every re-projection of an ADMM run (``train(resample=...)``).

For a sample with offset (dy, dx) ∈ [−s, s]², every time step of its frames is moved on the sensor
grid (C, H, W), zero fill where it enters from outside:

    x'_{t, c, i, j} = x_{t, c, i − dy, j − dx}   (0 where i − dy or j − dx is off the grid)

The offsets of draw k are a pure function of (seed, k), so a resumed run redraws the frames of the
iteration it resumes from bitwise.

Grouped offsets (``groups`` = K > 0, the default): the samples are split once, by the seed, into K fixed
groups, and in every draw all samples of a group move by the same offset (a new one per group and
draw). The move is a linear map x' = P_s x (P_s selects and zero-fills), so the input Gram of a draw is

    G' = Σ_g P_{s_g} G_g P_{s_g}ᵀ,   G_g = Σ_t Σ_{i in group g} x_{t,i} x_{t,i}ᵀ  (the unshifted frames),

    (P_s G P_sᵀ)_{(c,i,j),(c',i',j')} = G_{(c,i−dy,j−dx),(c',i'−dy,j'−dx)}  (0 where an index is off the grid)

:func:`shift_gram`: K Gram-sized additions per draw instead of a new product over every frame, and,
for integer-valued frames (spikes, counts), bitwise the Gram formed from the shifted frames (every entry
is an integer sum).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import SettingsError


DEFAULT_SHIFT = 1
"""The commands' default shift (pixels) on sensors of at least :data:`MIN_SIDE` pixels a side."""

MIN_SIDE = 16
"""Smallest sensor side that the commands augment by default: MNIST (28 × 28) and N-MNIST (34 × 34) are
shifted, the bundled 8 × 8 digits (where one pixel is an eighth of the image) are not."""


def default_shift(shape) -> int:
    """The shift of ``admm-snn train`` and ``compare`` when ``--augment-shift`` is left out:
    :data:`DEFAULT_SHIFT` on a (C, H, W) sensor with H, W ≥ :data:`MIN_SIDE`, else 0."""
    if shape is None or len(shape) != 3:
        return 0
    return DEFAULT_SHIFT if min(int(shape[1]), int(shape[2])) >= MIN_SIDE else 0


SHIFT_BLOCK = 2048
"""Samples per gather of :func:`shift_frames` (bounds its int64 index map to SHIFT_BLOCK·C·H·W entries)."""


def shift_frames(frames: torch.Tensor, offsets: torch.Tensor, shape, max_shift: int) -> torch.Tensor:
    """Time-major frames (T, N, C·H·W) with sample i moved by ``offsets[i] = (dy, dx)``, |dy|, |dx| ≤ s:
    one gather of every sample's source pixel (i − dy, j − dx), clamped onto the grid, times the mask of
    the pixels whose source is on it (zero fill), block by block over samples."""
    T, N, n = frames.shape
    C, H, W = (int(v) for v in shape)
    if C * H * W != n:
        raise SettingsError(f"augment shape {tuple(shape)} has {C * H * W} inputs but the frames have {n}")
    s = int(max_shift)
    offsets = offsets.to(torch.long)
    if offsets.numel() and int(offsets.abs().max()) > s:
        raise SettingsError(f"augment offsets reach {int(offsets.abs().max())} pixels; the shift is at most {s}")
    out = torch.empty_like(frames)
    rows = torch.arange(H).view(1, H, 1)
    cols = torch.arange(W).view(1, 1, W)
    channel = (torch.arange(C) * (H * W)).view(1, C, 1, 1)
    for b0 in range(0, N, SHIFT_BLOCK):
        b1 = min(N, b0 + SHIFT_BLOCK)
        off = offsets[b0:b1]
        si = rows - off[:, 0].view(-1, 1, 1)  # source row i − dy of every target pixel
        sj = cols - off[:, 1].view(-1, 1, 1)
        inside = ((si >= 0) & (si < H) & (sj >= 0) & (sj < W)).unsqueeze(1).expand(-1, C, H, W)
        src = channel + (si.clamp(0, H - 1) * W + sj.clamp(0, W - 1)).unsqueeze(1)
        src = src.reshape(b1 - b0, n).to(frames.device)
        block = out[:, b0:b1]
        torch.gather(frames[:, b0:b1], 2, src.unsqueeze(0).expand(T, -1, -1), out=block)
        block.mul_(inside.reshape(1, b1 - b0, n).to(device=frames.device, dtype=frames.dtype))
    return out


def shift_gram(gram: torch.Tensor, offset, shape, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out + P_s G P_sᵀ`` (``out`` None: float64 zeros): the Gram G (n × n, n = C·H·W) of frames moved
    by ``offset`` = (dy, dx), from the Gram of the unmoved frames; see the module docstring."""
    C, H, W = (int(v) for v in shape)
    n = C * H * W
    if tuple(gram.shape) != (n, n):
        raise SettingsError(f"augment shape {tuple(shape)} has {n} inputs but the Gram is {tuple(gram.shape)}")
    dy, dx = int(offset[0]), int(offset[1])
    if out is None:
        out = torch.zeros_like(gram, dtype=torch.promote_types(gram.dtype, torch.float64))
    if abs(dy) >= H or abs(dx) >= W:
        return out
    src = gram.view(C, H, W, C, H, W)
    dst = out.view(C, H, W, C, H, W)
    # target rows i in [max(0, dy), min(H, H + dy)) read source rows i − dy; the same for columns
    i0, i1, j0, j1 = max(0, dy), min(H, H + dy), max(0, dx), min(W, W + dx)
    dst[:, i0:i1, j0:j1, :, i0:i1, j0:j1] += src[:, i0 - dy:i1 - dy, j0 - dx:j1 - dx, :, i0 - dy:i1 - dy, j0 - dx:j1 - dx]
    return out


def checked_draw(resample, k: int, frames: torch.Tensor) -> torch.Tensor:
    """``resample(k)``, refused with one line unless it is a tensor of ``frames``' shape."""
    new = resample(k)
    if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(frames.shape):
        shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise SettingsError(f"resample({k}) returned {shape}; the training frames are {tuple(frames.shape)}")
    return new


@dataclass(frozen=True)
class ShiftResampler:
    """``resampler(k)``: the frames of draw k ≥ 1, moved by uniform random offsets in
    [−max_shift, max_shift]² (seeded by ``seed`` and k; draw 0 is the frames themselves): one offset per
    group of samples (``groups`` fixed groups, drawn once from the seed) or, with ``groups=0``, one per
    sample.

    ``frames``: the fixed time-major training frames (T, N, C·H·W); ``shape``: (C, H, W). With groups,
    :meth:`input_gram` forms each draw's input Gram from the groups' Grams (module docstring), which is
    what makes an augmented ADMM iteration cost about what a plain one does."""

    frames: torch.Tensor
    shape: tuple
    max_shift: int = 1
    seed: int = 0
    groups: int = 16
    first: int = 0
    """For a shard (:meth:`shard`): the index of ``frames``' first sample among all ``total`` samples."""
    total: int | None = None
    """For a shard: the number of samples of the whole data set (None: ``frames`` are all of it)."""

    def __post_init__(self):
        if int(self.max_shift) < 1:
            raise SettingsError(f"augment shift must be at least 1 pixel, got {self.max_shift}")
        C, H, W = (int(v) for v in self.shape)
        if 2 * int(self.max_shift) >= min(H, W):
            raise SettingsError(f"augment shift {self.max_shift} is too large for {H}x{W} frames")
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 0:
            raise SettingsError(f"augment groups must be 0 (one offset per sample) or a positive count, "
                                f"got {self.groups!r}")

    @property
    def key(self) -> str:
        """What a checkpoint records of this augmentation (a resume must use the same)."""
        groups = f"-groups{self.groups}" if self.groups else ""
        return f"shift{int(self.max_shift)}-seed{int(self.seed)}{groups}"

    def shard(self, start: int, stop: int) -> "ShiftResampler":
        """The resampler of samples ``start:stop`` (a data-parallel process's shard): the same groups and
        offsets as those samples get from this resampler, so the shards' draws together are its draw."""
        n = int(self.frames.shape[1])
        if not 0 <= start <= stop <= n:
            raise SettingsError(f"shard {start}:{stop} is outside the {n} samples of the augmentation")
        return replace(self, frames=self.frames[:, start:stop], first=self.first + int(start),
                       total=self.total if self.total is not None else n)

    def _span(self) -> tuple[int, int, int]:
        n = int(self.frames.shape[1])
        return int(self.first), int(self.first) + n, int(self.total if self.total is not None else n)

    @property
    def sample_groups(self) -> torch.Tensor | None:
        """The group of every sample (N,), the same in every draw; None without groups."""
        if not self.groups:
            return None
        a, b, total = self._span()
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + 999_983)
        return torch.randperm(total, generator=gen)[a:b] % int(self.groups)

    def group_offsets(self, k: int) -> torch.Tensor:
        """(groups, 2) offsets (dy, dx) of draw k, one per group (with ``groups=0``: per sample)."""
        a, b, total = self._span()
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(k))
        s = int(self.max_shift)
        if self.groups:
            return torch.randint(-s, s + 1, (int(self.groups), 2), generator=gen)
        return torch.randint(-s, s + 1, (total, 2), generator=gen)[a:b]

    def offsets(self, k: int) -> torch.Tensor:
        """(N, 2) offsets (dy, dx) of every sample in draw k."""
        off = self.group_offsets(k)
        return off if not self.groups else off[self.sample_groups]

    def input_gram(self, k: int, group_grams: list) -> torch.Tensor:
        """Σ_g P_{s_g} G_g P_{s_g}ᵀ: the Gram of draw k's frames from ``group_grams[g]`` = the Gram of
        group g's unmoved frames (draw 0 included: every offset 0)."""
        if not self.groups:
            raise SettingsError("ShiftResampler.input_gram needs groups > 0")
        off = self.group_offsets(k) if int(k) else torch.zeros(int(self.groups), 2, dtype=torch.long)
        out = None
        for g, G in enumerate(group_grams):
            out = shift_gram(G, off[g], self.shape, out)
        return out

    def __call__(self, k: int) -> torch.Tensor:
        if int(k) == 0:
            return self.frames.clone()
        return shift_frames(self.frames, self.offsets(k), self.shape, self.max_shift)
