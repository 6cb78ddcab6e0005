"""Reduce*, ArgMax/ArgMin, CumSum/CumProd.

Reduce* take ``axes`` as an attribute up to opset 12 (ReduceSum) / 17 (the others) and as an optional
input afterwards, where ``noop_with_empty_axes`` also appears. No axes means every axis.
"""

from __future__ import annotations

import torch

from onnxkd.torch_bridge.ops._common import as_ints, normalize_axis
from onnxkd.torch_bridge.ops.elementwise import unsigned_safe
from onnxkd.torch_bridge.registry import register


def _dims(x: torch.Tensor, axes: list[int] | None) -> tuple[int, ...]:
    if not axes:
        return tuple(range(x.dim()))
    return tuple(sorted({normalize_axis(a, x.dim()) for a in axes}))


def _extreme(x: torch.Tensor, dims, keepdim: bool, largest: bool) -> torch.Tensor:
    if x.dtype == torch.bool:
        return (torch.any if largest else torch.all)(x, dim=dims, keepdim=keepdim) if dims else x
    if x.numel() == 0:
        # Max over nothing is the identity of max: -inf (or the type's lowest value).
        shape = [1 if d in dims else n for d, n in enumerate(x.shape) if keepdim or d not in dims]
        info = torch.finfo(x.dtype) if x.dtype.is_floating_point else torch.iinfo(x.dtype)
        fill = (-float("inf") if largest else float("inf")) if x.dtype.is_floating_point else (info.min if largest else info.max)
        return torch.full(shape, fill, dtype=x.dtype, device=x.device)
    return (torch.amax if largest else torch.amin)(x, dim=dims, keepdim=keepdim)


def _in_float(fn):
    """Reductions defined with float math (mean, L2, log-sums) run in float64 for integer inputs, then cast back."""

    def run(x, dims, keepdim):
        if x.dtype.is_floating_point:
            return fn(x, dims, keepdim)
        return fn(x.double(), dims, keepdim).to(x.dtype)

    return run


def _sum(x, dims, keepdim):
    return torch.sum(x, dim=dims, keepdim=keepdim, dtype=x.dtype if x.dtype != torch.bool else None)


def _prod(x, dims, keepdim):
    # torch.prod takes one dim at a time.
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim, dtype=x.dtype)
    return x


def _logsumexp(x, dims, keepdim):
    if x.numel() == 0:
        return torch.log(_sum(torch.exp(x), dims, keepdim))
    return torch.logsumexp(x, dim=dims, keepdim=keepdim)


_REDUCERS = {
    "ReduceSum": _sum,
    "ReduceMean": _in_float(lambda x, d, k: torch.mean(x, dim=d, keepdim=k)),
    "ReduceMax": lambda x, d, k: _extreme(x, d, k, largest=True),
    "ReduceMin": lambda x, d, k: _extreme(x, d, k, largest=False),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: _sum(torch.abs(x), d, k),
    "ReduceL2": _in_float(lambda x, d, k: torch.sqrt(_sum(x * x, d, k))),
    "ReduceLogSum": _in_float(lambda x, d, k: torch.log(_sum(x, d, k))),
    "ReduceLogSumExp": _in_float(_logsumexp),
    "ReduceSumSquare": lambda x, d, k: _sum(x * x, d, k),
}

# Opset where axes moved from attribute to input.
_AXES_INPUT_SINCE = {name: 18 for name in _REDUCERS} | {"ReduceSum": 13}


def _reduce(fn, x: torch.Tensor, axes: list[int] | None, keepdims: int, noop_with_empty_axes: int) -> torch.Tensor:
    if not axes and noop_with_empty_axes:
        return x
    if x.dim() == 0:
        return fn(x.reshape(1), (0,), False)
    return fn(x, _dims(x, axes), bool(keepdims))


def _register_reduce(name: str, fn) -> None:
    @unsigned_safe
    def with_attr(ctx, data, *, axes=None, keepdims=1):
        return _reduce(fn, data, axes, keepdims, 0)

    @unsigned_safe
    def with_input(ctx, data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _reduce(fn, data, as_ints(axes), keepdims, noop_with_empty_axes)

    with_attr.__name__ = with_input.__name__ = name.lower()
    register(name, since=1)(with_attr)
    register(name, since=_AXES_INPUT_SINCE[name])(with_input)


for _name, _fn in _REDUCERS.items():
    _register_reduce(_name, _fn)


# ---------------------------------------------------------------- arg reductions

def _arg(x: torch.Tensor, axis: int, keepdims: int, select_last_index: int, largest: bool) -> torch.Tensor:
    fn = torch.argmax if largest else torch.argmin
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):  # no argmax kernels; the order survives widening
        x = x.to(torch.int64)
    axis = normalize_axis(axis, x.dim())
    if select_last_index:
        # torch picks the first of equal extremes; search the reversed axis and map the index back.
        index = fn(torch.flip(x, dims=(axis,)), dim=axis, keepdim=bool(keepdims))
        return x.shape[axis] - 1 - index
    return fn(x, dim=axis, keepdim=bool(keepdims))


@register("ArgMax", since=1)
def argmax(ctx, data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(data, axis, keepdims, select_last_index, largest=True)


@register("ArgMin", since=1)
def argmin(ctx, data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(data, axis, keepdims, select_last_index, largest=False)


# ---------------------------------------------------------------- scans

def _scan(x: torch.Tensor, axis, exclusive: int, reverse: int, fn, identity: int) -> torch.Tensor:
    axis = normalize_axis(as_ints(axis.reshape(-1) if isinstance(axis, torch.Tensor) else [axis])[0], x.dim())
    if reverse:
        x = torch.flip(x, dims=(axis,))
    if exclusive:
        # Shift by one along the axis, the first slot taking the identity element (0 for sums, 1 for products).
        pad = torch.full_like(x.narrow(axis, 0, 1), identity)
        x = torch.cat([pad, x.narrow(axis, 0, x.shape[axis] - 1)], dim=axis)
    out = fn(x, dim=axis, dtype=x.dtype)
    return torch.flip(out, dims=(axis,)) if reverse else out


@register("CumSum", since=11)
@unsigned_safe
def cumsum(ctx, x, axis, *, exclusive=0, reverse=0):
    return _scan(x, axis, exclusive, reverse, torch.cumsum, 0)


@register("CumProd", since=26)
@unsigned_safe
def cumprod(ctx, x, axis, *, exclusive=0, reverse=0):
    return _scan(x, axis, exclusive, reverse, torch.cumprod, 1)
