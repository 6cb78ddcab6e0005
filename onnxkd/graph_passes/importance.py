"""Channel importance per group: one score per channel, from every coupled parameter (group norm).

Criteria are data: ``CRITERIA[name](group, arrays, gradients, rng) -> np.ndarray`` of ``group.size``.
``taylor`` needs gradients keyed by initializer name (from the distillation bridge); untied copies
fall back to their exported name.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from onnxkd.graph_passes.groups import ChannelGroup, InitializerSlice
from onnxkd.graph_passes.untie import origin
from onnxkd.errors import OnnxkdError

WEIGHT_ROLES = ("out", "in", "param", "bn_scale")


def axis_totals(array: np.ndarray, axis: int, power: int = 1) -> np.ndarray:
    """sum(|array| ** power) over every axis but ``axis`` (one pass, no float64 copy of the array)."""
    values = np.abs(array) if power == 1 else np.square(array)
    others = tuple(k for k in range(array.ndim) if k != axis)
    return np.sum(values, axis=others, dtype=np.float64) if others else values.astype(np.float64)


def per_channel(totals: np.ndarray, s: InitializerSlice, size: int) -> np.ndarray:
    """Per-element totals along the slice's axis, summed per group channel."""
    return totals[s.offset:s.offset + size * s.block].reshape(size, s.block).sum(axis=1)


def _norm(power: int) -> Callable:
    def score(group, arrays, gradients, rng):
        total = np.zeros(group.size)
        for s in group.slices:
            if s.role in WEIGHT_ROLES:
                total += per_channel(axis_totals(arrays[s.name], s.axis, power), s, group.size)
        return total if power == 1 else np.sqrt(total)

    return score


def _bn(group, arrays, gradients, rng):
    scales = [s for s in group.slices if s.role == "bn_scale"]
    if not scales:
        return _norm(1)(group, arrays, gradients, rng)
    return sum(per_channel(axis_totals(arrays[s.name], s.axis), s, group.size) for s in scales)


def _random(group, arrays, gradients, rng):
    return rng.random(group.size)


def _taylor(group, arrays, gradients, rng):
    """|sum over a channel's weights of w * dL/dw| (first-order change of the loss when it is removed)."""
    if not gradients:
        raise OnnxkdError("criterion 'taylor' needs gradients (from the distillation bridge)")
    total = np.zeros(group.size)
    for s in group.slices:
        grad = gradients.get(s.name, gradients.get(origin(s.name)))
        if s.role in WEIGHT_ROLES and grad is not None:
            product = arrays[s.name].astype(np.float64) * np.asarray(grad, dtype=np.float64)
            others = tuple(k for k in range(product.ndim) if k != s.axis)
            signed = product.sum(axis=others) if others else product
            total += np.abs(per_channel(signed, s, group.size))
    return total


CRITERIA: dict[str, Callable] = {"l1": _norm(1), "l2": _norm(2), "bn": _bn, "random": _random, "taylor": _taylor}


def importance(groups: list[ChannelGroup], arrays: Mapping[str, np.ndarray], criterion: str = "l1",
               gradients: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> dict[int, np.ndarray]:
    """Scores of every prunable group's channels (higher = keep)."""
    if criterion not in CRITERIA:
        raise OnnxkdError(f"unknown criterion {criterion!r} (choose from {', '.join(CRITERIA)})")
    rng = np.random.default_rng(seed)
    score = CRITERIA[criterion]
    return {g.id: score(g, arrays, gradients, rng) for g in groups if g.prunable}
