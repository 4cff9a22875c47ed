"""Stratified, seeded index splits."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import SettingsError


def stratified_split(labels, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Split ``range(len(labels))`` into ``len(fractions)`` disjoint parts, stratified by label.

    Each class's indices are shuffled with a ``torch.Generator`` seeded with ``seed`` (classes in
    ascending label order) and cut at ``round(cumsum(fractions) * n_class)``, so every part receives
    its fraction of every class to within one sample. Deterministic for a given ``seed``; together the
    parts cover every index exactly once. Returns sorted int64 index tensors.
    """
    labels = torch.as_tensor(np.asarray(labels)).reshape(-1)
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise SettingsError(f"fractions={fractions!r} must be a sequence of numbers summing to 1") from None
    if not fr or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise SettingsError(f"fractions={fractions!r} must be non-negative numbers summing to 1, e.g. (0.8, 0.2)")
    gen = torch.Generator().manual_seed(int(seed))
    cum = np.cumsum(fr)
    parts: list[list[torch.Tensor]] = [[] for _ in fr]
    for c in torch.unique(labels).tolist():  # sorted ascending
        idx = torch.nonzero(labels == c, as_tuple=True)[0]
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        bounds = [0] + [int(round(x * idx.numel())) for x in cum[:-1]] + [idx.numel()]
        for k in range(len(fr)):
            parts[k].append(idx[bounds[k] : max(bounds[k], bounds[k + 1])])
    return [torch.sort(torch.cat(p) if p else torch.empty(0, dtype=torch.int64)).values.to(torch.int64) for p in parts]
