"""Shape and layout ops: Shape, Reshape, Slice, Concat, Split, Pad, ... (views and copies, no arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.ops._common import as_ints, normalize_axis
from onnxkd.torch_bridge.registry import register


def _device(ctx, *values):
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device
    return ctx.state.device


def _int64(ctx, values, *like) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=_device(ctx, *like))


# ---------------------------------------------------------------- Shape, Size, Constant


@register("Shape", since=1)
def shape(ctx, x, *, start=0, end=None):
    dims = list(x.shape)
    # Python slicing clamps out-of-range start/end exactly as Shape-15 specifies.
    return _int64(ctx, dims[start:end], x)


@register("Size", since=1)
def size(ctx, x):
    return _int64(ctx, int(math.prod(x.shape)), x)


@register("Constant", since=1)
def constant(ctx, *, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None):
    device = ctx.state.device
    if value is not None:
        return value.to(device) if isinstance(value, torch.Tensor) and device is not None else value
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32, device=device)
    if value_floats is not None:
        return torch.tensor(value_floats, dtype=torch.float32, device=device)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64, device=device)
    if value_ints is not None:
        return torch.tensor(value_ints, dtype=torch.int64, device=device)
    if value_string is not None:
        return np.array(_text(value_string), dtype=object)
    if value_strings is not None:
        return np.array([_text(s) for s in value_strings], dtype=object)
    raise OnnxkdError(f"node {ctx.node_name!r}: Constant without a value")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


@register("ConstantOfShape", since=9)
def constant_of_shape(ctx, shape, *, value=None):
    dims = as_ints(shape)
    device = _device(ctx, shape)
    if value is None:
        return torch.zeros(dims, dtype=torch.float32, device=device)
    return value.reshape(()).to(device).expand(dims).clone()


# ---------------------------------------------------------------- Reshape family


def _reshape(x, dims, allowzero):
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@register("Reshape", since=1)
def reshape_v1(ctx, x, *, shape=(), consumed_inputs=None):
    return _reshape(x, list(shape), 0)


@register("Reshape", since=5)
def reshape(ctx, x, shape, *, allowzero=0):
    return _reshape(x, as_ints(shape), allowzero)


@register("Flatten", since=1)
def flatten(ctx, x, *, axis=1):
    axis = normalize_axis(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Squeeze", since=1)
def squeeze_v1(ctx, x, *, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(normalize_axis(a, x.dim()) for a in axes))


@register("Squeeze", since=13)
def squeeze(ctx, x, axes=None):
    return squeeze_v1(ctx, x, axes=as_ints(axes))


@register("Unsqueeze", since=1)
def unsqueeze_v1(ctx, x, *, axes=()):
    rank = x.dim() + len(axes)
    for axis in sorted(normalize_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@register("Unsqueeze", since=13)
def unsqueeze(ctx, x, axes):
    return unsqueeze_v1(ctx, x, axes=as_ints(axes))


@register("Transpose", since=1)
def transpose(ctx, x, *, perm=None):
    if isinstance(x, np.ndarray):
        return np.transpose(x, perm)
    return x.permute(perm if perm is not None else list(reversed(range(x.dim()))))


@register("Expand", since=8)
def expand(ctx, x, shape):
    # Expand broadcasts both ways: a 1 in `shape` keeps the input's dimension.
    out = torch.broadcast_shapes(tuple(x.shape), tuple(as_ints(shape)))
    return x.expand(out)


@register("Tile", since=1)
def tile_v1(ctx, x, tiles, axis):
    repeats = [1] * x.dim()
    repeats[normalize_axis(as_ints(axis)[0], x.dim())] = as_ints(tiles)[0]
    return x.repeat(repeats)


@register("Tile", since=6)
def tile(ctx, x, repeats):
    return x.repeat(as_ints(repeats)) if x.dim() else x.clone()


@register("Concat", since=1)
def concat(ctx, *inputs, axis=1):  # Concat-1 defaulted axis to 1; from opset 4 it is required
    if any(isinstance(v, np.ndarray) for v in inputs):
        return np.concatenate(inputs, axis=axis)
    return torch.cat(inputs, dim=axis)


# ---------------------------------------------------------------- Split


def _split(ctx, x, sizes, axis, num_outputs=None):
    axis = normalize_axis(axis, x.dim())
    length = x.shape[axis]
    if not sizes:  # absent, or an empty `split` input
        count = num_outputs or ctx.num_outputs
        # Opset 18 lets the last chunk be smaller; before, the split must be even.
        sizes = [-(-length // count)] * count
        sizes[-1] = length - sizes[0] * (count - 1)
    return tuple(torch.split(x, list(sizes), dim=axis))


@register("Split", since=1)
def split_v1(ctx, x, split_input=None, *, axis=0, split=None):
    return _split(ctx, x, split if split is not None else as_ints(split_input), axis)


@register("Split", since=2)
def split_v2(ctx, x, *, axis=0, split=None):
    return _split(ctx, x, split, axis)


@register("Split", since=13)
def split_v13(ctx, x, split=None, *, axis=0):
    return _split(ctx, x, as_ints(split), axis)


@register("Split", since=18)
def split_v18(ctx, x, split=None, *, axis=0, num_outputs=None):
    return _split(ctx, x, as_ints(split), axis, num_outputs)


# ---------------------------------------------------------------- Slice


def _slice(x, starts, ends, axes, steps):
    rank = x.dim()
    axes = list(range(len(starts))) if axes is None else [normalize_axis(a, rank) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * rank
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        begin, stop, stride = _clamped(start, end, step, x.shape[axis])
        if stride > 0:
            index[axis] = slice(begin, stop, stride)
        else:
            flips.append((axis, torch.arange(begin, stop, stride, device=x.device)))
    x = x[tuple(index)]
    for axis, positions in flips:
        x = x.index_select(axis, positions)
    return x


def _clamped(start: int, end: int, step: int, size: int) -> tuple[int, int, int]:
    """ONNX's clamping of a slice (Python's ``slice.indices``, INT64_MAX sentinels included), written out:
    torch.compile before torch 2.13 cannot trace ``slice.indices`` and broke the graph at every Slice."""
    if step == 0:
        raise ValueError("Slice: a step of 0")
    low, high = (0, size) if step > 0 else (-1, size - 1)
    start, end = (start + size if start < 0 else start), (end + size if end < 0 else end)
    return min(max(start, low), high), min(max(end, low), high), step


@register("Slice", since=1)
def slice_v1(ctx, x, *, starts, ends, axes=None):
    return _slice(x, starts, ends, axes, None)


@register("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    return _slice(x, as_ints(starts), as_ints(ends), as_ints(axes), as_ints(steps))


# ---------------------------------------------------------------- generators


@register("Range", since=11)
def range_(ctx, start, limit, delta):
    dtype = start.dtype
    first, stop, step = start.item(), limit.item(), delta.item()
    if dtype.is_floating_point:
        count = max(int(math.ceil((stop - first) / step)), 0)
        steps = torch.arange(count, dtype=torch.float64, device=start.device)
        return (steps * step + first).to(dtype)
    count = max(-((first - stop) // step), 0)  # exact integer ceil((limit - start) / delta)
    return torch.arange(count, dtype=torch.int64, device=start.device).mul(step).add(first).to(dtype)


@register("EyeLike", since=9)
def eye_like(ctx, x, *, dtype=None, k=0):
    target = x.dtype if dtype is None else dtypes.to_torch_dtype(dtype)
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    cols = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    return (cols - rows == k).to(target)


@register("OneHot", since=9)
def one_hot(ctx, indices, depth, values, *, axis=-1):
    depth = int(depth.reshape(-1)[0].item())
    rank = indices.dim() + 1
    axis = normalize_axis(axis, rank)
    indices = indices.to(torch.int64)
    indices = torch.where(indices < 0, indices + depth, indices)
    classes = torch.arange(depth, device=indices.device).reshape([depth] + [1] * (rank - 1 - axis))
    hot = indices.unsqueeze(axis) == classes
    return torch.where(hot, values[1], values[0])


@register("Trilu", since=14)
def trilu(ctx, x, k=None, *, upper=1):
    diagonal = 0 if k is None else int(k.item())
    return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)


# ---------------------------------------------------------------- block rearrangement


@register("DepthToSpace", since=1)
def depth_to_space(ctx, x, *, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@register("SpaceToDepth", since=1)
def space_to_depth(ctx, x, *, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.permute(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.permute(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


# ---------------------------------------------------------------- Pad, CenterCropPad


def _pad_positions(length, before, after, mode, device):
    positions = torch.arange(-before, length + after, device=device)
    if mode == "edge":
        return positions.clamp(0, length - 1)
    if mode == "wrap":
        return positions.remainder(length)
    # reflect mirrors without repeating the border element
    period = 2 * (length - 1) if length > 1 else 1
    positions = positions.remainder(period)
    return torch.where(positions >= length, period - positions, positions)


def _pad(x, pads, mode, value, axes=None):
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    count = len(axes)
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + count]
    if mode == "constant":
        flat = []
        for axis in reversed(range(rank)):
            flat += [begin[axis], end[axis]]
        fill = 0 if value is None else value
        if isinstance(fill, torch.Tensor):
            fill = fill.reshape(-1)[0].item() if fill.numel() else 0
        return F.pad(x, flat, mode="constant", value=fill)
    # Negative pads crop first; the remaining positive pads index into the cropped tensor.
    for axis in range(rank):
        lo, hi = min(begin[axis], 0), min(end[axis], 0)
        if lo or hi:
            x = x.narrow(axis, -lo, x.shape[axis] + lo + hi)
    for axis in range(rank):
        lo, hi = max(begin[axis], 0), max(end[axis], 0)
        if lo or hi:
            x = x.index_select(axis, _pad_positions(x.shape[axis], lo, hi, mode, x.device))
    return x


@register("Pad", since=1)
def pad_v1(ctx, x, *, paddings, mode="constant", value=0.0):
    return _pad(x, paddings, mode, value)


@register("Pad", since=2)
def pad_v2(ctx, x, *, pads, mode="constant", value=0.0):
    return _pad(x, pads, mode, value)


@register("Pad", since=11)
def pad(ctx, x, pads, constant_value=None, axes=None, *, mode="constant"):
    return _pad(x, as_ints(pads), mode, constant_value, as_ints(axes))


@register("CenterCropPad", since=18)
def center_crop_pad(ctx, x, shape, *, axes=None):
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    pads = [0] * (2 * rank)
    for axis, target in zip(axes, as_ints(shape)):
        diff = target - x.shape[axis]
        # Extra odd element goes to the end for both crop and pad.
        if diff >= 0:
            pads[axis], pads[axis + rank] = diff // 2, diff - diff // 2
        else:
            crop = -diff
            pads[axis], pads[axis + rank] = -(crop // 2), -(crop - crop // 2)
    return _pad(x, pads, "constant", 0)
