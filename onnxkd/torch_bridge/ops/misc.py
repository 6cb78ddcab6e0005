"""Losses, quantization, signal processing (windows, DFT, STFT, mel), random generators, training optimizers."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.ops._common import as_ints, normalize_axis
from onnxkd.torch_bridge.ops.elementwise import cast_to
from onnxkd.torch_bridge.registry import register

# ---------------------------------------------------------------- losses

def _nll(log_prob: torch.Tensor, target: torch.Tensor, weight, reduction: str, ignore_index) -> torch.Tensor:
    # Written out rather than F.nll_loss: that refuses a weight that requires grad (a trainable initializer).
    target = target.long()
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    index = torch.where(valid, target, torch.zeros_like(target))  # ignored targets may lie outside [0, C)
    loss = -log_prob.gather(1, index.unsqueeze(1)).squeeze(1)
    scale = weight[index] * valid if weight is not None else valid.to(loss.dtype)
    loss = loss * scale
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / scale.sum()
    return loss


@register("NegativeLogLikelihoodLoss", since=12)
def nll_loss(ctx, input, target, weight=None, *, ignore_index=None, reduction="mean"):
    return _nll(input, target, weight, reduction, ignore_index)


@register("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(ctx, scores, labels, weights=None, *, ignore_index=None, reduction="mean"):
    log_prob = torch.log_softmax(scores, dim=1)
    return _nll(log_prob, labels, weights, reduction, ignore_index), log_prob


# ---------------------------------------------------------------- quantization

_QUANT_RANGE = {
    torch.uint8: (0, 255), torch.int8: (-128, 127),
    torch.uint16: (0, 65535), torch.int16: (-32768, 32767),
}


def _per_axis(value: torch.Tensor, x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """A scale / zero point shaped to broadcast against ``x``: scalar, per-axis 1-D, or blocked along ``axis``."""
    if value.dim() == 0 or value.numel() == 1 and not block_size:
        return value.reshape(())
    axis = normalize_axis(axis, x.dim())
    if not block_size:
        shape = [1] * x.dim()
        shape[axis] = value.numel()
        return value.reshape(shape)
    return value.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])


@register("QuantizeLinear", since=10)
def quantize_linear(ctx, x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0, precision=0):
    if y_zero_point is not None:
        out_dtype = y_zero_point.dtype
    else:
        out_dtype = dtypes.to_torch_dtype(output_dtype) if output_dtype else torch.uint8
    compute = torch.promote_types(torch.promote_types(x.dtype, y_scale.dtype), torch.float32)
    if precision:
        compute = dtypes.to_torch_dtype(precision)
    scaled = x.to(compute) / _per_axis(y_scale, x, axis, block_size).to(compute)
    if out_dtype.is_floating_point:  # float8: the zero point must be 0
        return cast_to(scaled, int(dtypes.to_ir_dtype(out_dtype)), saturate)
    low, high = _QUANT_RANGE[out_dtype]
    if ctx.training and y_zero_point is not None and (x.requires_grad or y_scale.requires_grad):
        return _fake_quantize(scaled, _per_axis(y_zero_point, x, axis, block_size).to(compute), low, high)
    q = torch.round(scaled)  # half to even, like np.rint
    if y_zero_point is not None:
        q = q + _per_axis(y_zero_point, x, axis, block_size).to(compute)
    return q.clamp(low, high).to(out_dtype)


def _fake_quantize(scaled: torch.Tensor, zero_point: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Quantization-aware training: the integer values as floats, rounded with a straight-through gradient.

    The same values as the integer path (half to even, saturated), but differentiable: the gradient passes the
    rounding unchanged and stops where the value saturates, and through ``scaled = x / scale`` it reaches the
    scale as LSQ's step-size gradient (Esser et al., 2020) once DequantizeLinear multiplies it back. The float
    result is recognised by DequantizeLinear by its integer zero point (a float input with an integer zero
    point is no ONNX type, so no real model is mistaken for it)."""
    rounded = scaled + (torch.round(scaled) - scaled).detach()
    return (rounded + zero_point).clamp(low, high)


@register("DequantizeLinear", since=10)
def dequantize_linear(ctx, x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    dx = x.to(torch.float32)
    fake_quantized = x.dtype.is_floating_point and x_zero_point is not None and not x_zero_point.dtype.is_floating_point
    if x_zero_point is not None and (not x.dtype.is_floating_point or fake_quantized):
        dx = dx - _per_axis(x_zero_point, x, axis, block_size).to(torch.float32)
    y = dx * _per_axis(x_scale, x, axis, block_size)
    return y.to(dtypes.to_torch_dtype(output_dtype) if output_dtype else x_scale.dtype)


@register("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx, x):
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    high = torch.maximum(zero, x.max().float())
    low = torch.minimum(zero, x.min().float())
    scale = torch.where(high == low, torch.ones_like(high), high - low) / 255.0
    zero_point = torch.round((0.0 - low / scale).clamp(0, 255))
    y = (torch.round(x.float() / scale) + zero_point).clamp(0, 255)
    return y.to(torch.uint8), scale.to(x.dtype), zero_point.to(torch.uint8)


def _requantize(acc: torch.Tensor, multiplier: torch.Tensor, zero_point, like: torch.Tensor) -> torch.Tensor:
    out_dtype = zero_point.dtype if zero_point is not None else like.dtype
    y = acc * multiplier
    if zero_point is not None:
        y = y + zero_point.double()
    low, high = _QUANT_RANGE[out_dtype]
    return torch.round(y).clamp(low, high).to(out_dtype)


def _centered(q: torch.Tensor, zero_point) -> torch.Tensor:
    # Integer products of int8/uint8 values are exact in float64 (the reference uses int32 accumulation).
    q = q.double()
    return q - zero_point.double() if zero_point is not None else q


@register("QLinearMatMul", since=10)
def qlinear_matmul(ctx, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = torch.matmul(_centered(a, a_zero_point), _centered(b, b_zero_point))
    multiplier = a_scale.double() * b_scale.double() / y_scale.double()
    return _requantize(acc, multiplier, y_zero_point, a)


@register("QLinearConv", since=10)
def qlinear_conv(ctx, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    spatial = x.dim() - 2
    w_zp = w_zero_point
    if w_zp is not None and w_zp.numel() > 1:
        w_zp = w_zp.reshape([-1] + [1] * (w.dim() - 1))
    xq, wq = _centered(x, x_zero_point), _centered(w, w_zp)
    kernel = list(kernel_shape or w.shape[2:])
    strides = list(strides or [1] * spatial)
    dilations = list(dilations or [1] * spatial)
    pad_pairs = _conv_pads(x.shape[2:], kernel, strides, dilations, auto_pad, pads)
    flat = [p for begin, end in reversed(pad_pairs) for p in (begin, end)]  # F.pad wants last dim first
    xq = F.pad(xq, flat)
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    acc = conv(xq, wq, bias.double() if bias is not None else None, stride=strides, dilation=dilations, groups=group)
    w_scale = w_scale.double()
    if w_scale.numel() > 1:  # per output channel
        w_scale = w_scale.reshape([1, -1] + [1] * spatial)
    return _requantize(acc, x_scale.double() * w_scale / y_scale.double(), y_zero_point, x)


def _conv_pads(in_shape, kernel, strides, dilations, auto_pad: str, pads) -> list[tuple[int, int]]:
    spatial = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        result = []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            result.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        return result
    if auto_pad == "VALID" or not pads:
        return [(0, 0)] * spatial
    return [(pads[i], pads[i + spatial]) for i in range(spatial)]


# ---------------------------------------------------------------- windows and spectra

def _window(ctx, size, output_datatype: int, periodic: int, fn) -> torch.Tensor:
    n = as_ints(size)[0]
    window = fn(n, periodic=bool(periodic), dtype=torch.float64, device=ctx.state.device)
    return window.to(dtypes.to_torch_dtype(output_datatype))


@register("HannWindow", since=17)
def hann_window(ctx, size, *, output_datatype=1, periodic=1):
    return _window(ctx, size, output_datatype, periodic, torch.hann_window)


@register("HammingWindow", since=17)
def hamming_window(ctx, size, *, output_datatype=1, periodic=1):
    # ONNX uses the exact Hamming coefficients 25/46 and 21/46, not torch's rounded 0.54/0.46.
    def hamming(n, **kw):
        return torch.hamming_window(n, alpha=25 / 46, beta=21 / 46, **kw)

    return _window(ctx, size, output_datatype, periodic, hamming)


@register("BlackmanWindow", since=17)
def blackman_window(ctx, size, *, output_datatype=1, periodic=1):
    return _window(ctx, size, output_datatype, periodic, torch.blackman_window)


def _dft(x: torch.Tensor, length: int | None, axis: int, inverse: int, onesided: int) -> torch.Tensor:
    """ONNX DFT on the real layout: x is [..., 1] (real) or [..., 2] (complex); ``axis`` counts that last dim too."""
    axis = normalize_axis(axis, x.dim())
    parts = x.double()  # the reference is float64 numpy; near-zero outputs need the extra precision
    signal = parts[..., 0] if x.shape[-1] == 1 else torch.complex(parts[..., 0], parts[..., 1])
    if length is None:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    if inverse:
        if onesided:
            return torch.fft.irfft(signal, n=length, dim=axis).unsqueeze(-1).to(x.dtype)
        result = torch.fft.ifft(signal, n=length, dim=axis)
    else:
        result = torch.fft.fft(signal, n=length, dim=axis)
        if onesided:
            result = result.narrow(axis, 0, length // 2 + 1)
    return torch.stack([result.real, result.imag], dim=-1).to(x.dtype)


@register("DFT", since=17)
def dft_17(ctx, input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    length = as_ints(dft_length)[0] if dft_length is not None else None
    return _dft(input, length, axis, inverse, onesided)


@register("DFT", since=20)
def dft_20(ctx, input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    length = as_ints(dft_length)[0] if dft_length is not None else None
    return _dft(input, length, as_ints(axis)[0] if axis is not None else -2, inverse, onesided)


@register("STFT", since=17)
def stft(ctx, signal, frame_step, window=None, frame_length=None, *, onesided=1):
    step = as_ints(frame_step)[0]
    if frame_length is not None:
        length = as_ints(frame_length)[0]
    else:
        length = window.shape[0] if window is not None else signal.shape[-2]
    # [batch, samples, c] -> [batch, frames, c, length] -> [batch, frames, length, c]
    frames = signal.unfold(1, length, step).transpose(-1, -2)
    if window is not None:
        frames = frames * window.to(frames.dtype).reshape(length, 1)
    return _dft(frames, length, 2, 0, onesided)


@register("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *, output_datatype=1):
    # A constant of the graph: computed once with numpy, exactly like the ONNX definition (integer bin edges).
    mel_bins, length, rate = (as_ints(v)[0] for v in (num_mel_bins, dft_length, sample_rate))
    low, high = float(lower_edge_hertz), float(upper_edge_hertz)
    edges = np.arange(0, mel_bins + 2)
    low_mel = 2595 * np.log1p(low / 700) / np.log(10)
    high_mel = 2595 * np.log1p(high / 700) / np.log(10)
    hz = 700 * np.expm1((edges * ((high_mel - low_mel) / edges.shape[0]) + low_mel) / 2595 * np.log(10))
    bins = (((length + 1) * hz) // rate).astype(int)
    out = np.zeros((length // 2 + 1, mel_bins))
    for i in range(mel_bins):
        left, center, right = bins[i], bins[i + 1], bins[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            out[left:center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return torch.from_numpy(out).to(device=ctx.state.device, dtype=dtypes.to_torch_dtype(output_datatype))


# ---------------------------------------------------------------- random generators

def _generator(seed, device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device or "cpu").manual_seed(int(seed))


def _like_dtype(dtype, like: torch.Tensor) -> torch.dtype:
    return dtypes.to_torch_dtype(dtype) if dtype is not None else like.dtype


@register("RandomNormal", since=1)
def random_normal(ctx, *, shape, dtype=1, mean=0.0, scale=1.0, seed=None):
    device = ctx.state.device
    out = torch.empty(shape, dtype=dtypes.to_torch_dtype(dtype), device=device)
    return out.normal_(mean, scale, generator=_generator(seed, device))


@register("RandomUniform", since=1)
def random_uniform(ctx, *, shape, dtype=1, high=1.0, low=0.0, seed=None):
    device = ctx.state.device
    out = torch.empty(shape, dtype=dtypes.to_torch_dtype(dtype), device=device)
    return out.uniform_(low, high, generator=_generator(seed, device))


@register("RandomNormalLike", since=1)
def random_normal_like(ctx, input, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    out = torch.empty(input.shape, dtype=_like_dtype(dtype, input), device=input.device)
    return out.normal_(mean, scale, generator=_generator(seed, input.device))


@register("RandomUniformLike", since=1)
def random_uniform_like(ctx, input, *, dtype=None, high=1.0, low=0.0, seed=None):
    out = torch.empty(input.shape, dtype=_like_dtype(dtype, input), device=input.device)
    return out.uniform_(low, high, generator=_generator(seed, input.device))


@register("Bernoulli", since=15)
def bernoulli(ctx, input, *, dtype=None, seed=None):
    return torch.bernoulli(input, generator=_generator(seed, input.device)).to(_like_dtype(dtype, input))


@register("Multinomial", since=7)
def multinomial(ctx, input, *, dtype=6, sample_size=1, seed=None):
    # The input holds unnormalized log-probabilities per batch row.
    probs = torch.softmax(input.double(), dim=-1)
    samples = torch.multinomial(probs, sample_size, replacement=True, generator=_generator(seed, input.device))
    return samples.to(dtypes.to_torch_dtype(dtype))


# ---------------------------------------------------------------- training optimizers (ai.onnx.preview.training)

_TRAINING = "ai.onnx.preview.training"


def _groups(tensors: tuple, per_param: int) -> list[tuple]:
    """Variadic optimizer inputs are laid out as X1..Xn, G1..Gn, V1..Vn, ...: regroup per parameter."""
    n = len(tensors) // per_param
    return [tuple(tensors[k * n + i] for k in range(per_param)) for i in range(n)]


@register("Adagrad", since=1, domain=_TRAINING)
def adagrad(ctx, r, t, *tensors, decay_factor=0.0, epsilon=0.0, norm_coefficient=0.0):
    rate = r / (1 + t * decay_factor)
    xs, hs = [], []
    for x, g, h in _groups(tensors, 3):
        g = norm_coefficient * x + g
        h_new = h + g * g
        xs.append((x - rate * g / (torch.sqrt(h_new) + epsilon)).to(x.dtype))
        hs.append(h_new.to(h.dtype))
    return tuple(xs + hs)


@register("Adam", since=1, domain=_TRAINING)
def adam(ctx, r, t, *tensors, alpha=0.9, beta=0.999, epsilon=0.0, norm_coefficient=0.0, norm_coefficient_post=0.0):
    step = float(t)
    rate = r * math.sqrt(1 - beta**step) / (1 - alpha**step) if step > 0 else r
    xs, vs, hs = [], [], []
    for x, g, v, h in _groups(tensors, 4):
        g = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g
        h_new = beta * h + (1 - beta) * g * g
        x_new = x - rate * (v_new / (torch.sqrt(h_new) + epsilon))
        xs.append(((1 - norm_coefficient_post) * x_new).to(x.dtype))
        vs.append(v_new.to(v.dtype))
        hs.append(h_new.to(h.dtype))
    return tuple(xs + vs + hs)


@register("Momentum", since=1, domain=_TRAINING)
def momentum(ctx, r, t, *tensors, alpha, beta, mode, norm_coefficient):
    # The gradient's coefficient is 1 on the first step (t == 0).
    beta_now = beta if float(t) > 0 else 1.0
    xs, vs = [], []
    for x, g, v in _groups(tensors, 3):
        g = norm_coefficient * x + g
        v_new = alpha * v + beta_now * g
        step = g + alpha * v_new if mode == "nesterov" else v_new
        xs.append((x - r * step).to(x.dtype))
        vs.append(v_new.to(v.dtype))
    return tuple(xs + vs)
