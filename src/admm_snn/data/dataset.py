"""The in-memory spike dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError


@dataclass
class SpikeDataset:
    """Framed spike data, stored sample-major.

    Attributes:
        frames: ``(N, T, n_inputs)``; uint8 (0/1) for binary spike frames, float32 for event counts.
        labels: ``(N,)`` int64 class indices in ``0..n_classes-1``.
        name: e.g. ``"nmnist-train"`` or ``"digits"``.
        n_classes: number of classes.
        sensor_shape: ``(channels, height, width)``, e.g. ``(2, 34, 34)`` for N-MNIST (polarity, y, x)
            or ``(1, 8, 8)`` for the scikit-learn digits; ``n_inputs == prod(sensor_shape)``.
    """

    frames: torch.Tensor
    labels: torch.Tensor
    name: str
    n_classes: int
    sensor_shape: tuple

    def __post_init__(self):
        self.sensor_shape = tuple(int(s) for s in self.sensor_shape)
        if not isinstance(self.frames, torch.Tensor) or self.frames.dim() != 3:
            shape = tuple(self.frames.shape) if hasattr(self.frames, "shape") else type(self.frames).__name__
            raise DataError(f"dataset {self.name!r}: frames must be a (N, T, n_inputs) tensor, got {shape}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dim() != 1:
            raise DataError(f"dataset {self.name!r}: labels must be a 1-D tensor")
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.to(torch.int64)
        n = self.frames.shape[0]
        if self.labels.shape[0] != n:
            raise DataError(
                f"dataset {self.name!r}: {n} frame samples but {self.labels.shape[0]} labels; they must match"
            )
        n_inputs = int(np.prod(self.sensor_shape))
        if self.frames.shape[2] != n_inputs:
            raise DataError(
                f"dataset {self.name!r}: frames have {self.frames.shape[2]} inputs but sensor_shape "
                f"{self.sensor_shape} has {n_inputs}"
            )
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.n_classes):
            raise DataError(
                f"dataset {self.name!r}: labels span {int(self.labels.min())}..{int(self.labels.max())}, "
                f"outside 0..{self.n_classes - 1}"
            )

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def time_steps(self) -> int:
        return int(self.frames.shape[1])

    @property
    def n_inputs(self) -> int:
        return int(self.frames.shape[2])

    def subset(self, idx) -> "SpikeDataset":
        """The samples at ``idx`` (index tensor, list, array or slice), as a new dataset."""
        if isinstance(idx, slice):
            frames, labels = self.frames[idx], self.labels[idx]
        else:
            index = idx.cpu() if isinstance(idx, torch.Tensor) else torch.as_tensor(np.asarray(idx))
            if index.dtype == torch.bool:
                if index.shape != (len(self),):
                    raise DataError(
                        f"boolean subset mask of shape {tuple(index.shape)} does not match dataset "
                        f"{self.name!r} of {len(self)} samples"
                    )
                index = index.nonzero().reshape(-1)
            index = index.to(torch.int64).reshape(-1)
            if index.numel() and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
                raise DataError(
                    f"subset index out of range for dataset {self.name!r} of {len(self)} samples"
                )
            frames, labels = self.frames[index], self.labels[index]
        return SpikeDataset(frames, labels, self.name, self.n_classes, self.sensor_shape)

    def time_major(self, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """Frames as a contiguous ``(T, N, n_inputs)`` tensor of ``dtype`` on ``device``."""
        return self.frames.to(device=device).permute(1, 0, 2).to(dtype=dtype).contiguous()

    def __repr__(self) -> str:
        return (
            f"SpikeDataset(name={self.name!r}, N={len(self)}, T={self.time_steps}, "
            f"n_inputs={self.n_inputs}, dtype={self.frames.dtype}, n_classes={self.n_classes})"
        )
