"""Elementwise arithmetic, math functions, variadic Max/Min/Sum/Mean, bit ops, casts."""

from __future__ import annotations

import functools

import numpy as np
import torch

from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.ops._common import normalize_axis
from onnxkd.torch_bridge.registry import register

# torch has uint16/32/64 tensors but few kernels for them: compute in a wider signed type and cast back.
_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def unsigned_safe(fn):
    """Run ``fn`` on widened copies of uint16/32/64 tensor arguments.

    An integer result goes back to the dtype of the first non-bool input (Where's data, Pow's base).
    """

    @functools.wraps(fn)
    def wrapper(ctx, *args, **kwargs):
        if not any(isinstance(a, torch.Tensor) and a.dtype in _WIDER for a in args):
            return fn(ctx, *args, **kwargs)
        lead = next(a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype != torch.bool)
        wide = [a.to(_WIDER[a.dtype]) if isinstance(a, torch.Tensor) and a.dtype in _WIDER else a for a in args]
        result = fn(ctx, *wide, **kwargs)
        if lead in _WIDER and isinstance(result, torch.Tensor) and result.dtype in (torch.int32, torch.int64):
            return result.to(lead)
        return result

    return wrapper


def legacy_broadcast(a: torch.Tensor, b: torch.Tensor, broadcast: int, axis: int | None) -> torch.Tensor:
    """Opset < 7 binary ops: with broadcast=1, B's dims line up with A's starting at ``axis`` (default: the suffix)."""
    if not broadcast or b.dim() >= a.dim():
        return b
    start = a.dim() - b.dim() if axis is None else normalize_axis(axis, a.dim())
    return b.reshape([1] * start + list(b.shape) + [1] * (a.dim() - start - b.dim()))


def _binary(name: str, fn):
    """Register a binary op: legacy broadcast attributes at opset 1 and 6, numpy broadcasting from 7 on."""

    @unsigned_safe
    def legacy(ctx, a, b, *, broadcast=0, axis=None, consumed_inputs=None):
        return fn(a, legacy_broadcast(a, b, broadcast, axis))

    @unsigned_safe
    def modern(ctx, a, b):
        return fn(a, b)

    register(name, since=1)(legacy)
    register(name, since=7)(modern)


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # C-style integer division, dtype kept


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The result has the base's dtype whatever the exponent's type (int base ** float exponent included).
    if a.dtype.is_floating_point:
        # Also float16 ** float32: torch would promote, and a float32 result would break fp16 consumers.
        return torch.pow(a, b if b.dtype.is_floating_point else b.to(a.dtype)).to(a.dtype)
    return torch.pow(a.double(), b.double()).to(a.dtype) if b.dtype.is_floating_point else torch.pow(a, b).to(a.dtype)


_binary("Add", torch.add)
_binary("Sub", torch.sub)
_binary("Mul", torch.mul)
_binary("Div", _div)
_binary("Pow", _pow)


@register("Mod", since=10)
@unsigned_safe
def mod(ctx, a, b, *, fmod=0):
    # fmod=0 is Python/numpy mod (sign of the divisor); fmod=1 is C fmod (sign of the dividend).
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


# ---------------------------------------------------------------- unary math

def _unary(name: str, fn, since: int = 1):
    @unsigned_safe
    def op(ctx, x, *, consumed_inputs=None):
        return fn(x)

    op.__name__ = name.lower()
    register(name, since=since)(op)


def _float_only(fn):
    """Integer inputs of float math (e.g. Sqrt of int) are computed in float64 and cast back like numpy + astype."""

    def run(x):
        if x.dtype.is_floating_point or x.dtype.is_complex:
            return fn(x)
        return fn(x.double()).to(x.dtype)

    return run


for _name, _fn in {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": _float_only(torch.reciprocal),
    "Sqrt": _float_only(torch.sqrt),
    "Exp": _float_only(torch.exp),
    "Log": _float_only(torch.log),
    "Floor": torch.floor,
    "Ceil": torch.ceil,
}.items():
    _unary(_name, _fn, since=1)

for _name, _fn, _since in [
    ("Sin", torch.sin, 7), ("Cos", torch.cos, 7), ("Tan", torch.tan, 7),
    ("Asin", torch.asin, 7), ("Acos", torch.acos, 7), ("Atan", torch.atan, 7),
    ("Sinh", torch.sinh, 9), ("Cosh", torch.cosh, 9), ("Asinh", torch.asinh, 9),
    ("Acosh", torch.acosh, 9), ("Atanh", torch.atanh, 9),
    ("Erf", torch.erf, 9),
    ("Round", torch.round, 11),  # torch.round rounds half to even, as ONNX requires
]:
    _unary(_name, _float_only(_fn), since=_since)
_unary("Sign", torch.sign, since=9)


@register("IsNaN", since=9)
def isnan(ctx, x):
    return torch.isnan(x)


@register("IsInf", since=10)
def isinf(ctx, x, *, detect_negative=1, detect_positive=1):
    if detect_negative and detect_positive:
        return torch.isinf(x)
    if detect_positive:
        return torch.isposinf(x)
    if detect_negative:
        return torch.isneginf(x)
    return torch.zeros_like(x, dtype=torch.bool)


@register("Identity", since=1)
def identity(ctx, x):
    return x  # tensors, sequences (lists) and optionals (None) alike


# ---------------------------------------------------------------- variadic

def _variadic(name: str, fn):
    @unsigned_safe
    def op(ctx, *inputs, consumed_inputs=None):
        return functools.reduce(fn, inputs)

    op.__name__ = name.lower()
    register(name, since=1)(op)


_variadic("Max", torch.maximum)
_variadic("Min", torch.minimum)
_variadic("Sum", torch.add)


@register("Mean", since=1)
def mean(ctx, *inputs, consumed_inputs=None):
    return functools.reduce(torch.add, inputs) / len(inputs)


# ---------------------------------------------------------------- bits

_BIT_WIDTH = {torch.uint8: 8, torch.int8: 8, torch.int16: 16, torch.int32: 32, torch.int64: 64,
              torch.uint16: 16, torch.uint32: 32, torch.uint64: 64}


@register("BitShift", since=11)
def bitshift(ctx, x, shift, *, direction):
    # Shifts >= the width (or < 0) give 0, or -1 for a negative signed value shifted right.
    dtype = x.dtype
    width = _BIT_WIDTH[dtype]
    signed = dtype.is_signed
    if dtype in _WIDER:
        x = x.to(_WIDER[dtype]) if dtype != torch.uint64 else x.view(torch.int64)
        shift = shift.to(x.dtype) if shift.dtype != torch.uint64 else shift.view(torch.int64)
    else:
        shift = shift.to(x.dtype) if shift.dtype != x.dtype else shift
    x, shift = torch.broadcast_tensors(x, shift)
    out_of_range = (shift < 0) | (shift >= width)
    safe = torch.where(out_of_range, torch.zeros_like(shift), shift)
    if direction == "LEFT":
        result = torch.bitwise_left_shift(x, safe)
        fill = torch.zeros_like(x)
    elif direction == "RIGHT":
        if dtype == torch.uint64:
            # Logical shift on int64 bits: arithmetic shift, then clear the copies of the sign bit.
            mask = torch.bitwise_not(torch.bitwise_left_shift(torch.full_like(x, -1), 64 - safe.clamp(min=1)))
            result = torch.where(safe == 0, x, torch.bitwise_right_shift(x, safe) & mask)
        else:
            result = torch.bitwise_right_shift(x, safe)
        fill = torch.where(x < 0, -torch.ones_like(x), torch.zeros_like(x)) if signed else torch.zeros_like(x)
    else:
        raise ValueError(f"BitShift direction must be LEFT or RIGHT, not {direction!r}")
    result = torch.where(out_of_range, fill, result)
    if dtype == torch.uint64:
        return result.view(torch.uint64)
    return result.to(dtype)


def _bitwise(name: str, fn, since: int = 18):
    @unsigned_safe
    def op(ctx, a, b):
        return fn(a, b)

    op.__name__ = name.lower()
    register(name, since=since)(op)


_bitwise("BitwiseAnd", torch.bitwise_and)
_bitwise("BitwiseOr", torch.bitwise_or)
_bitwise("BitwiseXor", torch.bitwise_xor)


@register("BitwiseNot", since=18)
def bitwise_not(ctx, x):
    if x.dtype in _WIDER:
        bits = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}[x.dtype]
        return torch.bitwise_not(x.view(bits)).view(x.dtype)
    return torch.bitwise_not(x)


# ---------------------------------------------------------------- casts

_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
_ONNX_STRING = 8


def _to_float8(x: torch.Tensor, dtype: torch.dtype, saturate: int) -> torch.Tensor:
    """ONNX float8 conversion: round to nearest even; out-of-range values saturate or become NaN (Inf for E5M2)."""
    x = x.float()
    top = torch.finfo(dtype).max
    if saturate:
        return x.clamp(-top, top).to(dtype)
    # Values that round beyond the largest finite value overflow; a tie at the midpoint rounds to even.
    ulp = 2.0 ** (np.floor(np.log2(top))) * torch.finfo(dtype).eps
    midpoint = top + ulp / 2
    odd = int(round(top / ulp)) % 2 == 1
    overflow = (x.abs() >= midpoint) if odd else (x.abs() > midpoint)
    inf = torch.full_like(x, float("inf")).copysign(x) if dtype == torch.float8_e5m2 else torch.full_like(x, float("nan"))
    return torch.where(overflow, inf, x.clamp(-top, top)).to(dtype)


def cast_to(x, dtype_code: int, saturate: int = 1):
    if isinstance(x, np.ndarray) or dtype_code == _ONNX_STRING:
        return _cast_numpy(x, dtype_code)
    dtype = dtypes.to_torch_dtype(dtype_code)
    if x.dtype == dtype:
        return x
    if dtype in _FLOAT8 and x.dtype != torch.bool:
        return _to_float8(x, dtype, saturate)
    if x.dtype in _FLOAT8 and not dtype.is_floating_point:
        x = x.float()
    return x.to(dtype)


def _cast_numpy(x, dtype_code: int):
    """String <-> number casts exist only in numpy."""
    import onnx_ir as ir

    if dtype_code == _ONNX_STRING:
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return array.astype(str).astype(object)
    target = ir.DataType(dtype_code).numpy()
    values = np.asarray(x).astype(np.float64 if np.dtype(target).kind == "f" else target)
    return torch.from_numpy(np.ascontiguousarray(values.astype(target)))


@register("Cast", since=1)
def cast(ctx, x, *, to, saturate=1, round_mode="up"):
    if isinstance(to, str):  # opset 1 named the type as a string
        import onnx

        to = onnx.TensorProto.DataType.Value(to.upper())
    return cast_to(x, to, saturate)


@register("CastLike", since=15)
def cast_like(ctx, x, like, *, saturate=1, round_mode="up"):
    if isinstance(like, np.ndarray):
        return _cast_numpy(x, _ONNX_STRING)
    return cast_to(x, int(dtypes.to_ir_dtype(like.dtype)), saturate)


@register("BitCast", since=26)
def bitcast(ctx, x, *, to):
    return x.contiguous().view(dtypes.to_torch_dtype(to))
