"""Pooling: AveragePool, MaxPool, LpPool, the Global* pools, MaxUnpool, MaxRoiPool, RoiAlign.

Torch's native pools take symmetric padding only and no dilation for averages; everything else goes
through ``_windows``, which pads explicitly and unfolds every spatial dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxkd.torch_bridge.ops._common import as_ints
from onnxkd.torch_bridge.ops.conv import resolve_pads, torch_pad_arg
from onnxkd.torch_bridge.registry import register

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class _Geometry:
    """Kernel, strides, dilations, pads and output size of one pooling node on one input."""

    def __init__(self, x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode):
        self.in_shape = list(x.shape[2:])
        n = len(self.in_shape)
        self.kernel = list(kernel_shape)
        self.strides = list(strides) if strides else [1] * n
        self.dilations = list(dilations) if dilations else [1] * n
        self.begin, self.end = resolve_pads(auto_pad, self.in_shape, self.kernel, self.strides, self.dilations, pads)
        self.extent = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]
        self.out = []
        for i, size in enumerate(self.in_shape):
            span = size + self.begin[i] + self.end[i] - self.extent[i]
            out = (-(-span // self.strides[i]) if ceil_mode else span // self.strides[i]) + 1
            # As in PyTorch: the last window must start inside the input or its leading pad.
            if ceil_mode and (out - 1) * self.strides[i] >= size + self.begin[i]:
                out -= 1
            self.out.append(out)
        # Pixels past the end pad that ceil_mode windows reach (never counted in averages).
        self.extra = [max(0, (o - 1) * s + e - (i + b + p)) for o, s, e, i, b, p in
                      zip(self.out, self.strides, self.extent, self.in_shape, self.begin, self.end)]

    @property
    def symmetric(self) -> bool:
        return self.begin == self.end and all(2 * p <= e for p, e in zip(self.begin, self.extent))

    @property
    def undilated(self) -> bool:
        return all(d == 1 for d in self.dilations)

    def windows(self, x, fill, fill_extra=None):
        """[N, C, *out, *kernel] views of x padded with `fill` (and `fill_extra` past the end pad)."""
        n = len(self.in_shape)
        x = F.pad(x, torch_pad_arg(self.begin, self.end), value=fill)
        if any(self.extra):
            x = F.pad(x, torch_pad_arg([0] * n, self.extra), value=fill if fill_extra is None else fill_extra)
        for i in range(n):
            x = x.unfold(2 + i, self.extent[i], self.strides[i])
            if self.dilations[i] > 1:
                x = x[..., :: self.dilations[i]]
            x = x.narrow(2 + i, 0, self.out[i])
        return x

    def kernel_dims(self):
        n = len(self.in_shape)
        return tuple(range(2 + n, 2 + 2 * n))


def _lowest(dtype):
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


@register("AveragePool", since=1)
def average_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None,
                 pads=None, strides=None):
    g = _Geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    n = len(g.in_shape)
    if n in _AVG and g.symmetric and g.undilated:
        return _AVG[n](x, g.kernel, g.strides, g.begin, bool(ceil_mode), bool(count_include_pad))
    total = g.windows(x, 0.0).sum(g.kernel_dims())
    ones = torch.ones([1, 1, *g.in_shape], dtype=x.dtype, device=x.device)
    count = g.windows(ones, 1.0 if count_include_pad else 0.0, 0.0).sum(g.kernel_dims())
    return total / count


def _onnx_indices(positions, x_shape, storage_order):
    """ONNX MaxPool indices: flat over the whole tensor, row-major (or column-major spatially)."""
    batch, channels, *spatial = x_shape
    flat = torch.zeros_like(positions[0])
    order = range(len(spatial)) if storage_order == 0 else reversed(range(len(spatial)))
    for i in order:
        flat = flat * spatial[i] + positions[i]
    plane = math.prod(spatial)
    n_idx = torch.arange(batch, device=flat.device).reshape(-1, *[1] * (flat.dim() - 1))
    c_idx = torch.arange(channels, device=flat.device).reshape(1, -1, *[1] * (flat.dim() - 2))
    return flat + (n_idx * channels + c_idx) * plane


def _max_pool(ctx, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides):
    g = _Geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    n = len(g.in_shape)
    want_indices = ctx.num_outputs > 1
    if n in _MAX and g.symmetric and x.is_floating_point():
        if not want_indices:
            return _MAX[n](x, g.kernel, g.strides, g.begin, g.dilations, bool(ceil_mode))
        y, plane_index = _MAX[n](x, g.kernel, g.strides, g.begin, g.dilations, bool(ceil_mode), return_indices=True)
        positions, rest = [], plane_index
        for size in reversed(g.in_shape):
            positions.insert(0, rest % size)
            rest = rest // size
        return y, _onnx_indices(positions, x.shape, storage_order)
    windows = g.windows(x, _lowest(x.dtype)).flatten(2 + n)
    y, best = windows.max(dim=-1)
    if not want_indices:
        return y
    positions, rest = [], best
    for i in reversed(range(n)):
        offset = rest % g.kernel[i]
        rest = rest // g.kernel[i]
        start = torch.arange(g.out[i], device=x.device).reshape([-1] + [1] * (n - 1 - i)) * g.strides[i]
        positions.insert(0, start + offset * g.dilations[i] - g.begin[i])
    return y, _onnx_indices(positions, x.shape, storage_order)


@register("MaxPool", since=1)
def max_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None):
    return _max_pool(ctx, x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides)


@register("LpPool", since=1)
def lp_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    g = _Geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    return g.windows(x.abs() ** p, 0.0).sum(g.kernel_dims()) ** (1.0 / p)


def _spatial(x):
    return tuple(range(2, x.dim()))


@register("GlobalAveragePool", since=1)
def global_average_pool(ctx, x):
    return x.mean(_spatial(x), keepdim=True)


@register("GlobalMaxPool", since=1)
def global_max_pool(ctx, x):
    return x.amax(_spatial(x), keepdim=True)


@register("GlobalLpPool", since=1)
def global_lp_pool(ctx, x, *, p=2):
    return (x.abs() ** p).sum(_spatial(x), keepdim=True) ** (1.0 / p)


@register("MaxUnpool", since=9)
def max_unpool(ctx, x, indices, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    n = x.dim() - 2
    strides = list(strides) if strides else [1] * n
    pads = list(pads) if pads else [0] * (2 * n)
    spatial = [(i - 1) * s + k - pads[d] - pads[d + n] for d, (i, s, k) in
               enumerate(zip(x.shape[2:], strides, kernel_shape))]
    default = [*x.shape[:2], *spatial]
    shape = as_ints(output_shape) or default
    if shape != default:
        # Indices address the default-sized output; re-address them in the requested one.
        coords, rest = [], indices
        for size in reversed(default):
            coords.insert(0, rest % size)
            rest = rest // size
        indices = torch.zeros_like(indices)
        for coord, size in zip(coords, shape):
            indices = indices * size + coord
    out = torch.zeros(math.prod(shape), dtype=x.dtype, device=x.device)
    return out.scatter(0, indices.reshape(-1), x.reshape(-1)).reshape(shape)


@register("MaxRoiPool", since=1)
def max_roi_pool(ctx, x, rois, *, pooled_shape, spatial_scale=1.0):
    height, width = x.shape[2:]
    pooled_h, pooled_w = pooled_shape
    outputs = []
    for roi in rois.tolist():
        batch = int(roi[0])
        x1, y1, x2, y2 = (round(v * spatial_scale) for v in roi[1:5])
        bin_h, bin_w = max(y2 - y1 + 1, 1) / pooled_h, max(x2 - x1 + 1, 1) / pooled_w
        rows = []
        for ph in range(pooled_h):
            h0 = min(max(math.floor(ph * bin_h) + y1, 0), height)
            h1 = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
            cells = []
            for pw in range(pooled_w):
                w0 = min(max(math.floor(pw * bin_w) + x1, 0), width)
                w1 = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
                if h1 <= h0 or w1 <= w0:
                    cells.append(x.new_zeros(x.shape[1]))
                else:
                    cells.append(x[batch, :, h0:h1, w0:w1].amax((1, 2)))
            rows.append(torch.stack(cells, -1))
        outputs.append(torch.stack(rows, -2))
    return torch.stack(outputs) if outputs else x.new_zeros(0, x.shape[1], pooled_h, pooled_w)


def _roi_axis(start, bin_size, pooled, grid, size, device, dtype):
    """Sample coordinates of one ROI axis, Caffe2 RoiAlign rules: [pooled * grid] (low, high, frac, valid)."""
    steps = torch.arange(pooled * grid, device=device, dtype=dtype)
    coord = start + (steps // grid) * bin_size + ((steps % grid) + 0.5) * bin_size / grid
    valid = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    return low, high, frac, valid


def _roi_align(x, rois, batch_indices, half_pixel, mode, output_height, output_width, sampling_ratio, spatial_scale):
    offset = 0.5 if half_pixel else 0.0
    height, width = x.shape[2:]
    outputs = []
    for roi, batch in zip(rois.tolist(), batch_indices.tolist()):
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not half_pixel:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / output_height)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / output_width)
        ylo, yhi, fy, vy = _roi_axis(y1, roi_h / output_height, output_height, grid_h, height, x.device, x.dtype)
        xlo, xhi, fx, vx = _roi_axis(x1, roi_w / output_width, output_width, grid_w, width, x.device, x.dtype)
        image = x[int(batch)]
        valid = (vy[:, None] & vx[None, :]).to(x.dtype)
        corners = [
            (image[:, ylo][:, :, xlo], (1 - fy)[:, None] * (1 - fx)[None, :]),
            (image[:, ylo][:, :, xhi], (1 - fy)[:, None] * fx[None, :]),
            (image[:, yhi][:, :, xlo], fy[:, None] * (1 - fx)[None, :]),
            (image[:, yhi][:, :, xhi], fy[:, None] * fx[None, :]),
        ]
        terms = [v * (w * valid) for v, w in corners]
        channels = x.shape[1]
        if mode == "avg":
            samples = sum(terms)
            samples = samples.reshape(channels, output_height, grid_h, output_width, grid_w)
            outputs.append(samples.sum((2, 4)) / max(grid_h * grid_w, 1))
        else:
            samples = torch.stack(terms).amax(0)
            samples = samples.reshape(channels, output_height, grid_h, output_width, grid_w)
            outputs.append(samples.amax((2, 4)))
    if not outputs:
        return x.new_zeros(0, x.shape[1], output_height, output_width)
    return torch.stack(outputs)


@register("RoiAlign", since=10)
def roi_align_v10(ctx, x, rois, batch_indices, *, mode="avg", output_height=1, output_width=1, sampling_ratio=0,
                  spatial_scale=1.0):
    # Opset 10 had no coordinate_transformation_mode: it behaved like "output_half_pixel".
    return _roi_align(x, rois, batch_indices, False, mode, output_height, output_width, sampling_ratio, spatial_scale)


@register("RoiAlign", since=16)
def roi_align(ctx, x, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
              output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    half_pixel = coordinate_transformation_mode == "half_pixel"
    return _roi_align(x, rois, batch_indices, half_pixel, mode, output_height, output_width, sampling_ratio,
                      spatial_scale)
