"""Convolutions: Conv, ConvTranspose, ConvInteger, DeformConv, Col2Im."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge.ops._common import as_ints
from onnxkd.torch_bridge.registry import register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def same_pads(auto_pad, in_shape, kernel, strides, dilations):
    """(begin, end) pads for SAME_UPPER/SAME_LOWER: output = ceil(input / stride); UPPER pads the odd pixel last."""
    begin, end = [], []
    for size, k, s, d in zip(in_shape, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def resolve_pads(auto_pad, in_shape, kernel, strides, dilations, pads):
    """Per-dimension (begin, end) pads from the auto_pad / pads attributes."""
    n = len(in_shape)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(auto_pad, in_shape, kernel, strides, dilations)
    if auto_pad == "VALID" or not pads:
        return [0] * n, [0] * n
    return list(pads[:n]), list(pads[n:])


def torch_pad_arg(begin, end):
    """ONNX per-dimension pads as F.pad's argument (last dimension first)."""
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return flat


def _defaults(x, w, kernel_shape, strides, dilations):
    n = x.dim() - 2
    kernel = list(kernel_shape) if kernel_shape else list(w.shape[2:])
    return n, kernel, list(strides) if strides else [1] * n, list(dilations) if dilations else [1] * n


def _conv(x, w, b, auto_pad, dilations, group, kernel_shape, pads, strides):
    n, kernel, strides, dilations = _defaults(x, w, kernel_shape, strides, dilations)
    if n not in _CONV:
        raise OnnxkdError(f"Conv with {n} spatial dimensions is not supported")
    begin, end = resolve_pads(auto_pad, list(x.shape[2:]), kernel, strides, dilations, pads)
    if begin != end:
        x = F.pad(x, torch_pad_arg(begin, end))
        begin = [0] * n
    return _CONV[n](x, w, b, strides, begin, dilations, group)


@register("Conv", since=1)
def conv(ctx, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    return _conv(x, w, b, auto_pad, dilations, group, kernel_shape, pads, strides)


@register("ConvInteger", since=10)
def conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None):
    # Exact in float64: int8 products summed stay far below 2**53.
    xf = x.double() - (x_zero_point.double() if x_zero_point is not None else 0)
    wf = w.double()
    if w_zero_point is not None:
        wz = w_zero_point.double()
        wf = wf - (wz.reshape(-1, *[1] * (w.dim() - 1)) if wz.numel() > 1 else wz)
    y = _conv(xf, wf, None, auto_pad, dilations, group, kernel_shape, pads, strides)
    return torch.round(y).to(torch.int32)


@register("ConvTranspose", since=1)
def conv_transpose(ctx, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    n, kernel, strides, dilations = _defaults(x, w, kernel_shape, strides, dilations)
    if n not in _CONV_T:
        raise OnnxkdError(f"ConvTranspose with {n} spatial dimensions is not supported")
    in_shape = list(x.shape[2:])
    out_pad = list(output_padding[:n]) if output_padding else [0] * n
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_shape, kernel, dilations)]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(output_shape)[-n:] if output_shape else [i * s for i, s in zip(in_shape, strides)]
        total = [f + p - t for f, p, t in zip(full, out_pad, target)]
        # The spec gives the odd padding pixel to the start, except for SAME_UPPER.
        if auto_pad == "SAME_UPPER":
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            begin, end = [t - t // 2 for t in total], [t // 2 for t in total]
    elif auto_pad == "VALID" or not pads:
        begin, end = [0] * n, [0] * n
    else:
        begin, end = list(pads[:n]), list(pads[n:])
    native = all(p < max(s, d) for p, s, d in zip(out_pad, strides, dilations))  # torch's output_padding limit
    if begin == end and all(v >= 0 for v in begin) and native:
        return _CONV_T[n](x, w, b, strides, begin, out_pad, group, dilations)
    # General case: the full transposed convolution, then crop `begin` and pad/crop the end.
    y = _CONV_T[n](x, w, None, strides, 0, 0, group, dilations)
    y = F.pad(y, torch_pad_arg([-v for v in begin], [p - e for p, e in zip(out_pad, end)]))
    if b is not None:
        y = y + b.reshape(-1, *[1] * n)
    return y


def _bilinear_gather(image, ys, xs):
    """Bilinear samples of image [N, G, C, H, W] at float positions ys/xs [N, G, P]; zero outside: [N, G, C, P]."""
    height, width = image.shape[-2:]
    flat = image.flatten(-2)
    y0, x0 = torch.floor(ys), torch.floor(xs)
    out = 0
    for dy in (0, 1):
        for dx in (0, 1):
            yc, xc = y0 + dy, x0 + dx
            weight = (1 - (ys - yc).abs()) * (1 - (xs - xc).abs())
            valid = (yc >= 0) & (yc < height) & (xc >= 0) & (xc < width)
            index = (yc.clamp(0, height - 1) * width + xc.clamp(0, width - 1)).long()
            index = index.unsqueeze(2).expand(-1, -1, flat.shape[2], -1)
            values = torch.gather(flat, 3, index)
            out = out + values * (weight * valid.to(weight.dtype)).unsqueeze(2)
    return out


@register("DeformConv", since=19)
def deform_conv(ctx, x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None,
                offset_group=1, pads=None, strides=None):
    n, kernel, strides, dilations = _defaults(x, w, kernel_shape, strides, dilations)
    if n != 2:
        raise OnnxkdError("DeformConv is supported for 2-D inputs only")
    pads = list(pads) if pads else [0] * 4
    batch, channels, height, width = x.shape
    out_h, out_w = offset.shape[2:]
    kh, kw = kernel
    k = kh * kw
    offset = offset.reshape(batch, offset_group, kh, kw, 2, out_h, out_w)
    oy = torch.arange(out_h, device=x.device, dtype=x.dtype) * strides[0] - pads[0]
    ox = torch.arange(out_w, device=x.device, dtype=x.dtype) * strides[1] - pads[1]
    ky = torch.arange(kh, device=x.device, dtype=x.dtype) * dilations[0]
    kx = torch.arange(kw, device=x.device, dtype=x.dtype) * dilations[1]
    ys = ky.view(kh, 1, 1, 1) + oy.view(1, 1, out_h, 1) + offset[:, :, :, :, 0]
    xs = kx.view(1, kw, 1, 1) + ox.view(1, 1, 1, out_w) + offset[:, :, :, :, 1]
    image = x.reshape(batch, offset_group, channels // offset_group, height, width)
    cols = _bilinear_gather(image, ys.reshape(batch, offset_group, -1), xs.reshape(batch, offset_group, -1))
    if mask is not None:
        cols = cols * mask.reshape(batch, offset_group, 1, -1)
    # cols [N, G_off, C/G_off, K*L] -> [N, group, C/group * K, L] matching W [M, C/group, kh, kw].
    cols = cols.reshape(batch, group, (channels // group) * k, out_h * out_w)
    weight = w.reshape(group, w.shape[0] // group, -1)
    y = torch.matmul(weight.unsqueeze(0), cols).reshape(batch, w.shape[0], out_h, out_w)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


@register("Col2Im", since=18)
def col2im(ctx, x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    image, block = as_ints(image_shape), as_ints(block_shape)
    n = len(image)
    dilations = list(dilations) if dilations else [1] * n
    strides = list(strides) if strides else [1] * n
    pads = list(pads) if pads else [0] * (2 * n)
    padded = [i + pads[d] + pads[d + n] for d, i in enumerate(image)]
    counts = [(p - (k - 1) * d - 1) // s + 1 for p, k, d, s in zip(padded, block, dilations, strides)]
    # Linear index into the padded image of every (block offset, block position) pair, row-major.
    index = torch.zeros((), dtype=torch.long, device=x.device)
    for d in range(n):
        offsets = torch.arange(block[d], device=x.device) * dilations[d]
        starts = torch.arange(counts[d], device=x.device) * strides[d]
        shape_k = [1] * (2 * n)
        shape_k[d] = block[d]
        shape_l = [1] * (2 * n)
        shape_l[n + d] = counts[d]
        coord = offsets.reshape(shape_k) + starts.reshape(shape_l)
        index = index * padded[d] + coord
    batch, channels = x.shape[0], x.shape[1] // math.prod(block)
    cols = x.reshape(batch, channels, -1)
    out = torch.zeros(batch, channels, math.prod(padded), dtype=x.dtype, device=x.device)
    out = out.index_add(2, index.reshape(-1), cols)
    out = out.reshape(batch, channels, *padded)
    return out[(slice(None), slice(None), *[slice(pads[d], pads[d] + image[d]) for d in range(n)])]


@register("CausalConvWithState", since=27)
def causal_conv_with_state(ctx, x, w, b=None, past_state=None, *, activation="none"):
    """Depthwise causal 1-D convolution over [past_state, x]; the last k-1 steps are the next state."""
    k = w.shape[2]
    if past_state is None:
        past_state = x.new_zeros(x.shape[0], x.shape[1], k - 1)
    padded = torch.cat([past_state, x], 2)
    y = F.conv1d(padded, w, b, groups=x.shape[1])
    if activation in ("silu", "swish"):
        y = F.silu(y.float()).to(x.dtype)
    return y, padded[:, :, padded.shape[2] - (k - 1):]
