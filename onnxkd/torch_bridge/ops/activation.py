"""Activations, Softmax/LogSoftmax/Hardmax, Clip and Dropout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxkd.torch_bridge.ops._common import normalize_axis
from onnxkd.torch_bridge.registry import register


@register("Relu", since=1)
def relu(ctx, x, *, consumed_inputs=None):
    return torch.relu(x)


@register("LeakyRelu", since=1)
def leaky_relu(ctx, x, *, alpha=0.01, consumed_inputs=None):
    return F.leaky_relu(x, alpha)


@register("PRelu", since=1)
def prelu(ctx, x, slope, *, consumed_inputs=None):
    if ctx.opset < 7 and slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1] > 1:
        # Before unidirectional broadcasting, a 1-D slope was per channel.
        slope = slope.reshape(-1, *[1] * (x.dim() - 2))
    return torch.where(x < 0, x * slope, x)


@register("Elu", since=1)
def elu(ctx, x, *, alpha=1.0, consumed_inputs=None):
    return F.elu(x, alpha)


@register("Selu", since=1)
def selu(ctx, x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875, consumed_inputs=None):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("Celu", since=12)
def celu(ctx, x, *, alpha=1.0):
    return F.celu(x, alpha)


@register("Sigmoid", since=1)
def sigmoid(ctx, x, *, consumed_inputs=None):
    return torch.sigmoid(x)


@register("HardSigmoid", since=1)
def hard_sigmoid(ctx, x, *, alpha=0.2, beta=0.5, consumed_inputs=None):
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@register("HardSwish", since=14)
def hard_swish(ctx, x):
    return F.hardswish(x)


@register("Tanh", since=1)
def tanh(ctx, x, *, consumed_inputs=None):
    return torch.tanh(x)


@register("Softplus", since=1)
def softplus(ctx, x):
    # F.softplus switches to identity above its threshold, which is exact in float32 from 20 on.
    return F.softplus(x)


@register("Softsign", since=1)
def softsign(ctx, x):
    return F.softsign(x)


@register("Gelu", since=20)
def gelu(ctx, x, *, approximate="none"):
    return F.gelu(x, approximate=approximate)


@register("Mish", since=18)
def mish(ctx, x):
    return F.mish(x)


@register("Swish", since=24)
def swish(ctx, x, *, alpha=1.0):
    return x * torch.sigmoid(alpha * x)


@register("ThresholdedRelu", since=10)
def thresholded_relu(ctx, x, *, alpha=1.0):
    return torch.where(x > alpha, x, torch.zeros_like(x))


@register("Shrink", since=9)
def shrink(ctx, x, *, bias=0.0, lambd=0.5):
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)


@register("Clip", since=1)
def clip_attrs(ctx, x, *, min=-math.inf, max=math.inf, consumed_inputs=None):  # noqa: A002
    return torch.clamp(x, min, max)


@register("Clip", since=11)
def clip(ctx, x, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        return x
    # torch.clamp computes min(max(x, lo), hi): all values become `max` when min > max, as ONNX says.
    return torch.clamp(x, min, max)


def _flattened_2d(fn, x, axis):
    """Opset < 13 Softmax family: the input is coerced to 2-D [prod(:axis), prod(axis:)]."""
    axis = normalize_axis(axis, x.dim())
    rows = math.prod(x.shape[:axis])
    return fn(x.reshape(rows, -1), 1).reshape(x.shape)


def _hardmax(x, axis):
    index = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter_(axis, index, 1)


@register("Softmax", since=1)
def softmax_v1(ctx, x, *, axis=1):
    return _flattened_2d(torch.softmax, x, axis)


@register("Softmax", since=13)
def softmax(ctx, x, *, axis=-1):
    return torch.softmax(x, axis)


@register("LogSoftmax", since=1)
def log_softmax_v1(ctx, x, *, axis=1):
    return _flattened_2d(torch.log_softmax, x, axis)


@register("LogSoftmax", since=13)
def log_softmax(ctx, x, *, axis=-1):
    return torch.log_softmax(x, axis)


@register("Hardmax", since=1)
def hardmax_v1(ctx, x, *, axis=1):
    return _flattened_2d(_hardmax, x, axis)


@register("Hardmax", since=13)
def hardmax(ctx, x, *, axis=-1):
    return _hardmax(x, normalize_axis(axis, x.dim()))


def _dropout(ctx, x, ratio, training, seed=None):
    """Inverted dropout: (x * mask / (1 - ratio), mask); identity with an all-true mask when not training."""
    if ctx.num_outputs == 1 and (not training or ratio == 0 or seed is None):
        return (F.dropout(x, ratio, True) if training and ratio else x), None
    if not training or ratio == 0:
        return x, torch.ones(x.shape, dtype=torch.bool, device=x.device)
    generator = None
    if seed is not None:
        # One seeded generator per node, kept across calls: reproducible, yet a new mask every step.
        generator = ctx.extra.get("generator")
        if generator is None or generator.device != x.device:
            generator = ctx.extra["generator"] = torch.Generator(device=x.device).manual_seed(int(seed))
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= ratio
    return x * keep.to(x.dtype) / (1.0 - ratio), keep


@register("Dropout", since=1)
def dropout_v1(ctx, x, *, ratio=0.5, is_test=0, consumed_inputs=None):
    y, mask = _dropout(ctx, x, ratio, ctx.training and not is_test)
    return y, None if mask is None else mask.to(x.dtype)


@register("Dropout", since=7)
def dropout_v7(ctx, x, *, ratio=0.5):
    y, mask = _dropout(ctx, x, ratio, ctx.training)
    return y, None if mask is None else mask.to(x.dtype)


@register("Dropout", since=10)
def dropout_v10(ctx, x, *, ratio=0.5):
    return _dropout(ctx, x, ratio, ctx.training)


@register("Dropout", since=12)
def dropout(ctx, x, ratio=None, training_mode=None, *, seed=None):
    ratio = 0.5 if ratio is None else float(ratio)
    training = ctx.training or (training_mode is not None and bool(training_mode))
    return _dropout(ctx, x, ratio, training, seed)
