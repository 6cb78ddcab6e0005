"""Comparisons, boolean logic and Where. Results of comparisons and logic are always bool."""

from __future__ import annotations

import numpy as np
import torch

from onnxkd.torch_bridge.ops.elementwise import legacy_broadcast, unsigned_safe
from onnxkd.torch_bridge.registry import register


def _binary(name: str, fn, since: int = 1):
    """Opset 1 carried broadcast/axis attributes (see legacy_broadcast); from 7 on broadcasting is numpy's."""

    @unsigned_safe
    def legacy(ctx, a, b, *, broadcast=0, axis=None):
        return fn(a, legacy_broadcast(a, b, broadcast, axis))

    @unsigned_safe
    def modern(ctx, a, b):
        return fn(a, b)

    legacy.__name__ = modern.__name__ = name.lower()
    if since < 7:
        register(name, since=since)(legacy)
    register(name, since=max(since, 7))(modern)


def _equal(a, b):
    if isinstance(a, np.ndarray):  # string tensors (opset 19) stay numpy
        return torch.from_numpy(np.equal(a, b))
    return torch.eq(a, b)


_binary("Equal", _equal)
_binary("Less", torch.lt)
_binary("Greater", torch.gt)
_binary("And", torch.logical_and)
_binary("Or", torch.logical_or)
_binary("Xor", torch.logical_xor)
_binary("LessOrEqual", torch.le, since=12)
_binary("GreaterOrEqual", torch.ge, since=12)


@register("Not", since=1)
def logical_not(ctx, x):
    return torch.logical_not(x)


@register("Where", since=9)
@unsigned_safe
def where(ctx, condition, x, y):
    return torch.where(condition.bool(), x, y)
