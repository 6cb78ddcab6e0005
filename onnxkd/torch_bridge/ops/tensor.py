"""Indexing and resampling ops: Gather/Scatter families, TopK, Unique, Resize, GridSample, NMS, ..."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge.ops._common import as_ints, normalize_axis
from onnxkd.torch_bridge.registry import register


def _wrap(indices: torch.Tensor, length) -> torch.Tensor:
    """ONNX indices may be negative (counted from the end)."""
    indices = indices.to(torch.int64)
    return torch.where(indices < 0, indices + length, indices)


# ---------------------------------------------------------------- Gather family


@register("Gather", since=1)
def gather(ctx, data, indices, *, axis=0):
    if isinstance(data, np.ndarray):
        return np.take(data, indices.cpu().numpy(), axis=axis)
    axis = normalize_axis(axis, data.dim())
    flat = _wrap(indices, data.shape[axis]).reshape(-1)
    out = data.index_select(axis, flat)
    return out.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


@register("GatherElements", since=11)
def gather_elements(ctx, data, indices, *, axis=0):
    axis = normalize_axis(axis, data.dim())
    return torch.gather(data, axis, _wrap(indices, data.shape[axis]))


@register("GatherND", since=11)
def gather_nd(ctx, data, indices, *, batch_dims=0):
    b = batch_dims
    batch_shape = data.shape[:b]
    depth = indices.shape[-1]
    batch = math.prod(batch_shape)
    flat_data = data.reshape((batch,) + data.shape[b:])
    flat_indices = indices.reshape(batch, -1, depth).to(torch.int64)
    dims = torch.tensor(data.shape[b:b + depth], device=data.device, dtype=torch.int64)
    flat_indices = torch.where(flat_indices < 0, flat_indices + dims, flat_indices)
    rows = torch.arange(batch, device=data.device).unsqueeze(1)
    picked = flat_data[(rows, *flat_indices.unbind(-1))]
    return picked.reshape(indices.shape[:-1] + data.shape[b + depth:])


# ---------------------------------------------------------------- Scatter family

_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_elements(data, indices, updates, axis, reduction):
    axis = normalize_axis(axis, data.dim())
    indices = _wrap(indices, data.shape[axis])
    if reduction == "none":
        return data.scatter(axis, indices, updates)
    return data.scatter_reduce(axis, indices, updates, _REDUCE[reduction], include_self=True)


@register("Scatter", since=9)
def scatter(ctx, data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis, "none")


@register("ScatterElements", since=11)
def scatter_elements(ctx, data, indices, updates, *, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


@register("ScatterND", since=11)
def scatter_nd(ctx, data, indices, updates, *, reduction="none"):
    depth = indices.shape[-1]
    lead = data.shape[:depth]
    strides = torch.tensor([math.prod(lead[i + 1:]) for i in range(depth)], device=data.device, dtype=torch.int64)
    dims = torch.tensor(lead, device=data.device, dtype=torch.int64)
    indices = indices.to(torch.int64)
    linear = (torch.where(indices < 0, indices + dims, indices) * strides).sum(-1).reshape(-1)
    flat = data.reshape((math.prod(lead),) + data.shape[depth:])
    rows = updates.reshape((linear.numel(),) + data.shape[depth:])
    if reduction == "none":
        out = flat.index_copy(0, linear, rows)
    elif reduction == "add":
        out = flat.index_add(0, linear, rows)
    else:
        index = linear.reshape((-1,) + (1,) * (rows.dim() - 1)).expand(rows.shape)
        out = flat.scatter_reduce(0, index, rows, _REDUCE[reduction], include_self=True)
    return out.reshape(data.shape)


@register("TensorScatter", since=24)
def tensor_scatter(ctx, past, update, write_indices=None, *, axis=-2, mode="linear"):
    axis = normalize_axis(axis, past.dim())
    batch, steps = past.shape[0], update.shape[axis]
    if write_indices is None:
        write_indices = torch.zeros(batch, dtype=torch.int64, device=past.device)
    positions = write_indices.to(torch.int64).reshape(batch, 1) + torch.arange(steps, device=past.device)
    if mode == "circular":
        positions = positions.remainder(past.shape[axis])
    shape = [batch] + [1] * (past.dim() - 1)
    shape[axis] = steps
    index = positions.reshape(shape).expand(update.shape)
    return past.scatter(axis, index, update)


# ---------------------------------------------------------------- selection


@register("Compress", since=9)
def compress(ctx, x, condition, *, axis=None):
    if axis is None:
        x, axis = x.reshape(-1), 0
    keep = torch.nonzero(condition.reshape(-1).to(torch.bool)).reshape(-1)
    return x.index_select(normalize_axis(axis, x.dim()), keep)


@register("NonZero", since=9)
def non_zero(ctx, x):
    if x.dim() == 0:
        return torch.zeros((0, int(bool(x))), dtype=torch.int64, device=x.device)
    return torch.nonzero(x).t().contiguous()


def _topk(x, k, axis, largest):
    axis = normalize_axis(axis, x.dim())
    key = x
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        key = x.to(torch.int64)  # torch sorts no wide unsigned types; values below 2**63 order the same
    # A stable sort puts the lower index first among ties, as ONNX requires.
    _, order = torch.sort(key, dim=axis, descending=bool(largest), stable=True)
    order = order.narrow(axis, 0, k)
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        return torch.gather(key, axis, order).to(x.dtype), order
    return torch.gather(x, axis, order), order


@register("TopK", since=1)
def top_k_v1(ctx, x, *, k, axis=-1):
    return _topk(x, k, axis, 1)


@register("TopK", since=10)
def top_k(ctx, x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002  (ONNX attribute name)
    return _topk(x, as_ints(k)[0], axis, largest)


@register("Unique", since=11)
def unique(ctx, x, *, axis=None, sorted=1):  # noqa: A002
    source = x.reshape(-1) if axis is None else x
    dim = 0 if axis is None else normalize_axis(axis, x.dim())
    values, inverse, counts = torch.unique(source, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    positions = torch.arange(inverse.numel(), device=x.device)
    first = torch.full((counts.numel(),), inverse.numel(), dtype=torch.int64, device=x.device)
    first = first.scatter_reduce(0, inverse, positions, "amin", include_self=True)
    if not sorted:
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=x.device)
        values, first, counts, inverse = values.index_select(dim, order), first[order], counts[order], rank[inverse]
    return values, first, inverse.reshape(-1), counts


@register("ReverseSequence", since=10)
def reverse_sequence(ctx, x, sequence_lens, *, batch_axis=1, time_axis=0):
    steps, batch = x.shape[time_axis], x.shape[batch_axis]
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    lengths = sequence_lens.to(torch.int64).reshape(1, batch)
    source = torch.where(t < lengths, lengths - 1 - t, t)  # (time, batch)
    if time_axis > batch_axis:
        source = source.t()
    shape = [1] * x.dim()
    shape[time_axis], shape[batch_axis] = steps, batch
    return torch.gather(x, time_axis, source.reshape(shape).expand(x.shape))


# ---------------------------------------------------------------- Resize / Upsample

def _source_coords(mode, out_len, in_len, scale, roi):
    """Source coordinate of every output index (float64) and the extrapolation mask, as ONNX defines them."""
    y = np.arange(out_len, dtype=np.float64)
    out_width = scale * in_len
    mask = None
    if mode == "align_corners":
        x = np.zeros(out_len) if out_width == 1 else y * (in_len - 1) / (out_width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        if out_width == 1:
            x = np.full(out_len, (roi[1] - roi[0]) * (in_len - 1) / 2)
        else:
            x = y * (roi[1] - roi[0]) * (in_len - 1) / (out_width - 1)
        x = x + roi[0] * (in_len - 1)
        mask = (x < 0) | (x > in_len - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_len, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_width)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise OnnxkdError(f"Resize: unknown coordinate_transformation_mode {mode!r}")
    return x, mask


def _nearest_index(x, nearest_mode, scale, in_len):
    if nearest_mode == "simple":  # Upsample / Resize-10: floor when enlarging, ceil when shrinking
        index = np.ceil(x) if scale < 1 else np.floor(x)
    elif nearest_mode == "round_prefer_floor":
        index = np.where(x - np.floor(x) == 0.5, np.floor(x), np.round(x))
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(x + 0.5)
    elif nearest_mode == "floor":
        index = np.floor(x)
    elif nearest_mode == "ceil":
        index = np.ceil(x)
    else:
        raise OnnxkdError(f"Resize: unknown nearest_mode {nearest_mode!r}")
    return np.clip(index, 0, in_len - 1).astype(np.int64)


def _kernel(mode, x, scale, antialias, cubic_a):
    """Tap offsets (taps,), the base pixel (out,) they are relative to, and the weights (out, taps)."""
    base = np.floor(x)
    ratio = x - base
    if antialias and scale < 1:
        support = 1.0 if mode == "linear" else 2.0
        start = int(np.floor(-support / scale) + 1)
        offsets = np.arange(start, 2 - start if mode == "cubic" else start + 2 - 2 * start)
        # Exact integers count as ratio 1 from the previous pixel, as in the ONNX reference.
        ratio = np.where(ratio == 0, 1.0, ratio)
        base = np.where(x - np.floor(x) == 0, x - 1, np.floor(x))
        t = np.abs((offsets[None, :] - ratio[:, None]) * scale)
        if mode == "linear":
            weights = np.clip(1 - t, 0, 1)
        else:
            weights = _cubic(t, cubic_a)
        weights = weights / weights.sum(1, keepdims=True)
        return offsets, base, weights
    if mode == "linear":
        return np.array([0, 1]), base, np.stack([1 - ratio, ratio], 1)
    offsets = np.array([-1, 0, 1, 2])
    t = np.abs(offsets[None, :] - ratio[:, None])
    return offsets, base, _cubic(t, cubic_a)


def _cubic(t, a):
    t2, t3 = t * t, t * t * t
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _resize_axis(x, axis, out_len, scale, opts, roi):
    in_len = x.shape[axis]
    coords, mask = _source_coords(opts["ctm"], out_len, in_len, scale, roi)
    if opts["mode"] == "nearest":
        index = _nearest_index(coords, opts["nearest_mode"], scale, in_len)
        y = x.index_select(axis, torch.from_numpy(index).to(x.device))
    else:
        offsets, base, weights = _kernel(opts["mode"], coords, scale, opts["antialias"], opts["cubic_a"])
        neighbours = base[:, None].astype(np.int64) + offsets[None, :]
        if opts["exclude_outside"]:
            weights = np.where((neighbours < 0) | (neighbours >= in_len), 0.0, weights)
            total = weights.sum(1, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
        neighbours = np.clip(neighbours, 0, in_len - 1)
        compute = x if x.is_floating_point() else x.to(torch.float32)
        shape = [1] * x.dim()
        shape[axis] = out_len
        y = None
        for tap in range(neighbours.shape[1]):
            picked = compute.index_select(axis, torch.from_numpy(neighbours[:, tap]).to(x.device))
            w = torch.from_numpy(weights[:, tap]).to(device=x.device, dtype=compute.dtype).reshape(shape)
            y = picked * w if y is None else y + picked * w
        if not x.is_floating_point():
            y = y.round().to(x.dtype)
    if mask is not None and mask.any():
        shape = [1] * x.dim()
        shape[axis] = out_len
        keep = torch.from_numpy(~mask).to(x.device).reshape(shape)
        y = torch.where(keep, y, torch.tensor(opts["extrapolation_value"], dtype=y.dtype, device=y.device))
    return y


def _exact_reciprocal(scale):
    """torch's nearest kernels multiply by a float32 1/scale; only powers of two floor like ONNX's division."""
    return scale >= 1 and float(scale).is_integer() and (int(scale) & (int(scale) - 1)) == 0


def _fast_interpolate(x, sizes, scales, opts):
    """F.interpolate when it computes exactly the ONNX result (the exporters' common patterns), else None.

    ``sizes``/``scales`` cover every axis of ``x``; the batch and channel axes must be left alone."""
    rank = x.dim()
    if not 3 <= rank <= 5 or opts["antialias"] or opts["exclude_outside"] or not x.is_floating_point():
        return None
    if scales[:2] != [1.0, 1.0] or sizes[:2] != list(x.shape[:2]):
        return None
    sizes, scales = sizes[2:], scales[2:]
    mode, ctm, nearest_mode = opts["mode"], opts["ctm"], opts["nearest_mode"]
    linear = {3: "linear", 4: "bilinear", 5: "trilinear"}[rank]
    # ONNX maps coordinates with scale * input_length, which differs from the integer size when it is fractional.
    if not all(float(s * n) == m for s, n, m in zip(scales, x.shape[2:], sizes)):
        return None
    if mode == "linear" and ctm == "align_corners":
        return F.interpolate(x, size=sizes, mode=linear, align_corners=True)
    if mode == "linear" and (ctm == "half_pixel" or ctm == "pytorch_half_pixel" and min(sizes) > 1):
        return F.interpolate(x, scale_factor=scales, mode=linear, align_corners=False, recompute_scale_factor=False)
    if mode == "nearest" and all(_exact_reciprocal(s) for s in scales):
        if ctm == "asymmetric" and nearest_mode in ("floor", "simple"):
            return F.interpolate(x, scale_factor=scales, mode="nearest", recompute_scale_factor=False)
        if ctm == "half_pixel" and nearest_mode == "round_prefer_ceil":
            return F.interpolate(x, scale_factor=scales, mode="nearest-exact", recompute_scale_factor=False)
    return None


def _resize(x, roi, scales, sizes, *, mode="nearest", ctm="half_pixel", nearest_mode="round_prefer_floor",
            cubic_a=-0.75, exclude_outside=0, extrapolation_value=0.0, antialias=0, axes=None,
            keep_aspect_ratio_policy="stretch"):
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)  # Upsample-1/7 spellings
    if mode not in ("nearest", "linear", "cubic"):
        raise OnnxkdError(f"Resize: unknown mode {mode!r}")
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    in_dims = [x.shape[a] for a in axes]
    if sizes:
        scales = [s / n for s, n in zip(sizes, in_dims)]
        if keep_aspect_ratio_policy != "stretch":
            scale = min(scales) if keep_aspect_ratio_policy == "not_larger" else max(scales)
            scales = [scale] * len(axes)
            sizes = [int(scale * n + 0.5) for n in in_dims]
    else:
        sizes = [int(math.floor(s * n)) for s, n in zip(scales, in_dims)]
    full_sizes, full_scales = list(x.shape), [1.0] * rank
    full_roi = None if ctm != "tf_crop_and_resize" or not roi else [0.0] * rank + [1.0] * rank
    for i, axis in enumerate(axes):
        full_sizes[axis], full_scales[axis] = sizes[i], scales[i]
        if full_roi is not None:
            full_roi[axis], full_roi[axis + rank] = roi[i], roi[i + len(axes)]
    opts = dict(mode=mode, ctm=ctm, nearest_mode=nearest_mode, cubic_a=cubic_a, exclude_outside=exclude_outside,
                extrapolation_value=extrapolation_value, antialias=antialias)
    if full_roi is None:
        fast = _fast_interpolate(x, full_sizes, full_scales, opts)
        if fast is not None:
            return fast
    for axis in range(rank):
        axis_roi = None if full_roi is None else (full_roi[axis], full_roi[axis + rank])
        if full_scales[axis] == 1 and full_sizes[axis] == x.shape[axis] and axis_roi in (None, (0.0, 1.0)):
            continue
        x = _resize_axis(x, axis, full_sizes[axis], full_scales[axis], opts, axis_roi)
    return x


def _floats(value):
    if value is None or (isinstance(value, torch.Tensor) and value.numel() == 0):
        return None
    return [float(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value)]


@register("Upsample", since=7)
def upsample_v7(ctx, x, *, scales, mode="nearest"):
    return _resize(x, None, list(scales), None, mode=mode, ctm="asymmetric", nearest_mode="simple")


@register("Upsample", since=9)
def upsample(ctx, x, scales, *, mode="nearest"):
    return _resize(x, None, _floats(scales), None, mode=mode, ctm="asymmetric", nearest_mode="simple")


@register("Resize", since=10)
def resize_v10(ctx, x, scales, *, mode="nearest"):
    return _resize(x, None, _floats(scales), None, mode=mode, ctm="asymmetric", nearest_mode="simple")


@register("Resize", since=11)
def resize(ctx, x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0,
           antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):
    sizes = as_ints(sizes) if sizes is not None and sizes.numel() else None
    return _resize(x, _floats(roi), _floats(scales), sizes, mode=mode, ctm=coordinate_transformation_mode,
                   nearest_mode=nearest_mode, cubic_a=cubic_coeff_a, exclude_outside=exclude_outside,
                   extrapolation_value=extrapolation_value, antialias=antialias, axes=axes,
                   keep_aspect_ratio_policy=keep_aspect_ratio_policy)


# ---------------------------------------------------------------- sampling grids

# GridSample-20 renamed bilinear/bicubic to linear/cubic.
_GRID_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic",
               "bicubic": "bicubic"}


@register("GridSample", since=16)
def grid_sample(ctx, x, grid, *, mode="bilinear", padding_mode="zeros", align_corners=0):
    return F.grid_sample(x, grid.to(x.dtype), mode=_GRID_MODES[mode], padding_mode=padding_mode,
                         align_corners=bool(align_corners))


@register("AffineGrid", since=20)
def affine_grid(ctx, theta, size, *, align_corners=0):
    return F.affine_grid(theta, as_ints(size), align_corners=bool(align_corners))


@register("NonMaxSuppression", since=10)
def non_max_suppression(ctx, boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    limit = as_ints(max_output_boxes_per_class)
    limit = limit[0] if limit else 0
    iou_limit = _floats(iou_threshold)
    iou_limit = iou_limit[0] if iou_limit else 0.0
    min_score = _floats(score_threshold)
    min_score = min_score[0] if min_score else None
    corners = boxes.detach().to(torch.float64).cpu()
    if center_point_box:
        centre, half = corners[..., :2], corners[..., 2:] / 2
        corners = torch.cat([centre - half, centre + half], -1)[..., [1, 0, 3, 2]]
    # Boxes may give their corners in either order.
    low = torch.minimum(corners[..., :2], corners[..., 2:])
    high = torch.maximum(corners[..., :2], corners[..., 2:])
    all_scores = scores.detach().to(torch.float64).cpu()
    selected = []
    for b in range(all_scores.shape[0]):
        top = torch.minimum(high[b].unsqueeze(1), high[b].unsqueeze(0))
        bottom = torch.maximum(low[b].unsqueeze(1), low[b].unsqueeze(0))
        inter = (top - bottom).clamp(min=0).prod(-1)
        area = (high[b] - low[b]).prod(-1)
        union = area.unsqueeze(1) + area.unsqueeze(0) - inter
        iou = torch.where((inter > 0) & (union > 0), inter / union, torch.zeros_like(inter))
        for c in range(all_scores.shape[1]):
            class_scores = all_scores[b, c]
            order = torch.sort(class_scores, descending=True, stable=True).indices.tolist()
            kept: list[int] = []
            for index in order:
                if len(kept) >= limit:
                    break
                if min_score is not None and not class_scores[index] > min_score:
                    continue
                if all(iou[index, k] <= iou_limit for k in kept):
                    kept.append(index)
                    selected.append((b, c, index))
    device = boxes.device
    return torch.tensor(selected, dtype=torch.int64, device=device).reshape(-1, 3)
