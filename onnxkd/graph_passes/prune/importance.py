"""Channel importance per group: one score per channel, from every coupled parameter (group norm).

Criteria are data: ``CRITERIA[name](group, arrays, gradients, rng) -> np.ndarray`` of ``group.size``.
``taylor`` and ``kd`` need arrays keyed by initializer name, computed through the torch bridge and
handed in as numpy (this layer never imports torch); untied copies fall back to their exported name.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.groups import ChannelGroup, InitializerSlice
from onnxkd.graph_passes.normalize.untie import origin

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
                total += per_channel(axis_totals(s.view(arrays[s.name]), s.axis, power), s, group.size)
        return total if power == 1 else np.sqrt(total)

    return score


def _bn(group, arrays, gradients, rng):
    scales = [s for s in group.slices if s.role == "bn_scale"]
    if not scales:
        return _norm(1)(group, arrays, gradients, rng)
    return sum(per_channel(axis_totals(s.view(arrays[s.name]), s.axis), s, group.size) for s in scales)


def _random(group, arrays, gradients, rng):
    return rng.random(group.size)


def _slice_sums(group, arrays, gradients):
    """Per coupled weight slice: sum over each channel's weights of w * dL/dw (signed)."""
    for s in group.slices:
        grad = gradients.get(s.name, gradients.get(origin(s.name)))
        if s.role in WEIGHT_ROLES and grad is not None:
            if np.shape(grad) != np.shape(arrays[s.name]):
                raise OnnxkdError(f"gradients: {s.name!r} has shape {list(np.shape(grad))}, the model's weight "
                                  f"{list(np.shape(arrays[s.name]))}: computed on another model?")
            yield per_channel(_products_by_channel(s.view(arrays[s.name]), s.view(np.asarray(grad)), s.axis), s,
                              group.size)


PRODUCT_CHUNK = 1 << 22  # float64 elements of w * g made at once (32 MB)


def _products_by_channel(weights: np.ndarray, grads: np.ndarray, axis: int) -> np.ndarray:
    """sum of w * g over every axis but ``axis``, in float64, a few channels at a time: the whole product in
    float64 (with both operands cast) took 6x the weight's memory, 1.5 GB for one 8192x8192 layer."""
    weights, grads = np.moveaxis(weights, axis, 0), np.moveaxis(grads, axis, 0)
    channels = len(weights)
    per_channel_elements = max(1, weights.size // max(channels, 1))
    step = max(1, PRODUCT_CHUNK // per_channel_elements)
    sums = np.empty(channels, np.float64)
    for start in range(0, channels, step):
        w = weights[start:start + step].astype(np.float64)
        w *= grads[start:start + step]
        sums[start:start + step] = w.reshape(len(w), -1).sum(axis=1)
    return sums


def channel_sums(group: ChannelGroup, arrays: Mapping[str, np.ndarray], gradients: Mapping[str, np.ndarray]) -> np.ndarray:
    """sum over all of a channel's coupled weights of w * dL/dw: the loss gradient of a mask on the channel.

    (Through positively homogeneous ops such as ReLU, a producer's rows and a consumer's columns each
    give the same mask gradient, so the sum is a fixed multiple of it.) ``onnxkd.distill.importance``
    squares it per batch for the ``kd`` criterion.
    """
    return sum(_slice_sums(group, arrays, gradients), np.zeros(group.size))


def _taylor(group, arrays, gradients, rng):
    """|sum over a channel's weights of w * dL/dw| (first-order change of the loss when it is removed)."""
    if not gradients:
        raise OnnxkdError("criterion 'taylor' needs gradients (from the distillation bridge)")
    sums = list(_slice_sums(group, arrays, gradients))
    if not sums:  # gradients of another model (other weight names) would leave every channel at 0: a first-k cut
        weights = sorted({s.name for s in group.slices if s.role in WEIGHT_ROLES})
        raise OnnxkdError(f"gradients: none for channel group {group.id}'s weights ({', '.join(weights[:3])}"
                          f"{', ...' if len(weights) > 3 else ''}): computed on another model?")
    return sum((np.abs(t) for t in sums), np.zeros(group.size))


def _kd(group, arrays, gradients, rng):
    raise OnnxkdError("criterion 'kd' needs scores measured on data by the torch bridge "
                      "(onnxkd prune --criterion kd --data ..., or onnxkd.distill.importance.kd_scores)")


CRITERIA: dict[str, Callable] = {"l1": _norm(1), "l2": _norm(2), "bn": _bn, "random": _random, "taylor": _taylor,
                                 "kd": _kd}
# criteria whose scores come from data through the torch bridge (``gradients`` must be given)
DATA_CRITERIA = ("taylor", "kd")


def importance(groups: list[ChannelGroup], arrays: Mapping[str, np.ndarray], criterion: str = "l1",
               gradients: Mapping[str, np.ndarray] | None = None, seed: int = 0,
               scores: Mapping[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Scores of every prunable group's channels (higher = keep).

    ``scores``: measured elsewhere (the ``kd`` criterion, per group id of this same analysis); checked
    to cover every prunable group with one score per channel.
    """
    if criterion not in CRITERIA:
        raise OnnxkdError(f"unknown criterion {criterion!r} (choose from {', '.join(CRITERIA)})")
    if scores is not None:
        for group in groups:
            if group.prunable and (group.id not in scores or len(scores[group.id]) != group.size):
                raise OnnxkdError(f"scores: none, or not {group.size} values, for channel group {group.id}")
        return {g.id: np.asarray(scores[g.id], dtype=np.float64) for g in groups if g.prunable}
    rng = np.random.default_rng(seed)
    score = CRITERIA[criterion]
    return {g.id: score(g, arrays, gradients, rng) for g in groups if g.prunable}
