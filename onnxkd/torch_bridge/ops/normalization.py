"""Normalizations: Batch/Instance/Layer/Group/RMS/Lp normalization, LRN, MeanVarianceNormalization."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxkd.torch_bridge.ops._common import normalize_axis
from onnxkd.torch_bridge.registry import register

_HALF = (torch.float16, torch.bfloat16)


def _channel_view(t, x, spatial):
    """A per-channel parameter shaped to broadcast against x (or per-activation when spatial=0)."""
    return t.reshape(1, *x.shape[1:]) if not spatial else t.reshape(1, -1, *[1] * (x.dim() - 2))


def _batch_norm(ctx, x, scale, bias, mean, var, epsilon, momentum, use_batch_stats, spatial=1):
    """Y plus (running_mean, running_var, batch_mean, batch_var) as ONNX training mode defines them.

    ONNX's momentum weighs the old value: running = running * momentum + batch * (1 - momentum), the
    batch variance being the population (biased) one. When the module itself trains, the running
    buffers are also updated in place the way PyTorch's BatchNorm does (unbiased batch variance), so a
    student trained here carries usable statistics back to ONNX.
    """
    if not use_batch_stats:
        if spatial:
            dtype = x.dtype
            return F.batch_norm(x, mean.to(dtype), var.to(dtype), scale.to(dtype), bias.to(dtype), False, 0.0, epsilon)
        return (x - _channel_view(mean, x, 0)) / torch.sqrt(_channel_view(var, x, 0) + epsilon) \
            * _channel_view(scale, x, 0) + _channel_view(bias, x, 0)
    if ctx.training and spatial and ctx.num_outputs == 1:
        # PyTorch's fused kernel; its momentum weighs the new value, and it updates the buffers in place.
        return F.batch_norm(x, mean, var, scale, bias, True, 1.0 - momentum, epsilon)
    dims = [0] + list(range(2, x.dim())) if spatial else [0]
    batch_mean = x.mean(dims)
    batch_var = x.var(dims, unbiased=False)

    def view(t):
        return _channel_view(t, x, spatial)

    y = (x - view(batch_mean)) / torch.sqrt(view(batch_var) + epsilon) * view(scale) + view(bias)
    out_mean = mean * momentum + batch_mean.to(mean.dtype) * (1 - momentum)
    out_var = var * momentum + batch_var.to(var.dtype) * (1 - momentum)
    if ctx.training:
        count = x.numel() // batch_mean.numel()
        with torch.no_grad():
            unbiased = batch_var * (count / max(count - 1, 1))
            mean.mul_(momentum).add_(batch_mean.detach().to(mean.dtype), alpha=1 - momentum)
            var.mul_(momentum).add_(unbiased.detach().to(var.dtype), alpha=1 - momentum)
    return y, out_mean, out_var, batch_mean, batch_var


@register("BatchNormalization", since=1)
def batch_norm_v1(ctx, x, scale, bias, mean, var, *, consumed_inputs=None, epsilon=1e-5, is_test=0, momentum=0.9,
                  spatial=1):
    batch_stats = ctx.training or (not is_test and ctx.num_outputs > 1)
    return _batch_norm(ctx, x, scale, bias, mean, var, epsilon, momentum, batch_stats, spatial)


@register("BatchNormalization", since=7)
def batch_norm_v7(ctx, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1):
    # Opsets 7-13 signal training mode by asking for the statistics outputs.
    return _batch_norm(ctx, x, scale, bias, mean, var, epsilon, momentum, ctx.training or ctx.num_outputs > 1, spatial)


@register("BatchNormalization", since=9)
def batch_norm_v9(ctx, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9):
    return _batch_norm(ctx, x, scale, bias, mean, var, epsilon, momentum, ctx.training or ctx.num_outputs > 1)


@register("BatchNormalization", since=14)
def batch_norm(ctx, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    return _batch_norm(ctx, x, scale, bias, mean, var, epsilon, momentum, ctx.training or bool(training_mode))


@register("InstanceNormalization", since=1)
def instance_norm(ctx, x, scale, bias, *, epsilon=1e-5, consumed_inputs=None):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


def _stash(x, stash_type):
    return x.float() if stash_type == 1 and x.dtype in _HALF else x


@register("LayerNormalization", since=17)
def layer_norm(ctx, x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = normalize_axis(axis, x.dim())
    shape = tuple(x.shape[axis:])
    if ctx.num_outputs == 1 and tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, epsilon)
    dims = tuple(range(axis, x.dim()))
    xs = _stash(x, stash_type)
    mean = xs.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(xs.var(dims, unbiased=False, keepdim=True) + epsilon)
    y = ((xs - mean) * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv_std


@register("GroupNormalization", since=18)
def group_norm_v18(ctx, x, scale, bias, *, epsilon=1e-5, num_groups):
    # Opset 18 scales and shifts per group; spread them over each group's channels.
    per_group = x.shape[1] // num_groups
    return F.group_norm(x, num_groups, scale.repeat_interleave(per_group), bias.repeat_interleave(per_group), epsilon)


@register("GroupNormalization", since=21)
def group_norm(ctx, x, scale, bias, *, epsilon=1e-5, num_groups, stash_type=1):
    xs = _stash(x, stash_type)
    return F.group_norm(xs, num_groups, scale.to(xs.dtype), bias.to(xs.dtype), epsilon).to(x.dtype)


@register("RMSNormalization", since=23)
def rms_norm(ctx, x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = normalize_axis(axis, x.dim())
    xs = _stash(x, stash_type)
    dims = tuple(range(axis, x.dim()))
    y = xs * torch.rsqrt(xs.pow(2).mean(dims, keepdim=True) + epsilon)
    return y.to(x.dtype) * scale


@register("LpNormalization", since=1)
def lp_norm(ctx, x, *, axis=-1, p=2):
    norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)


@register("LRN", since=1)
def lrn(ctx, x, *, alpha=1e-4, beta=0.75, bias=1.0, size):
    # ONNX sums channels [c - floor((size-1)/2), c + ceil((size-1)/2)]; torch centres even windows the other way.
    square = (x * x).unsqueeze(1)
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
    pad = [0, 0] * (x.dim() - 2) + [front, back]
    window_sum = F.pad(square, pad).unfold(2, size, 1).sum(-1).squeeze(1)
    return x / (bias + alpha / size * window_sum) ** beta


@register("MeanVarianceNormalization", since=9)
def mean_variance_norm(ctx, x, *, axes=(0, 2, 3)):
    axes = tuple(axes)
    mean = x.mean(axes, keepdim=True)
    std = torch.sqrt((x * x).mean(axes, keepdim=True) - mean * mean)
    return (x - mean) / (std + 1e-9)
