"""Small helpers shared by op families."""

from __future__ import annotations

from typing import Sequence

import torch


def as_ints(value: torch.Tensor | Sequence[int] | None) -> list[int] | None:
    """A 1-D int tensor (shape, axes, pads, ...) or list as a Python list of ints."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def normalize_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
