"""Input channels a convolution reads only because they were padded in with zero weights.

``onnxkd quantize`` pads an RGB stem to 4 channels (a Pad of the quantized input, a zero weight column) so that
onnxruntime runs it on its fast int8 kernel (quantize/channel_pad.py). The padded channel adds no parameter and
no multiply-accumulate of the model's: counting it made an int8 model 3% "larger" than its float original.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx_ir as ir

_ONNX = ("", "ai.onnx")


def zero_padded_channels(conv: ir.Node) -> int:
    """How many of a 2-D, one-group Conv's last input channels come from a constant Pad of its input (through a
    DequantizeLinear or not) on the channel axis alone, and meet only zero weights; 0 when none do."""
    if conv.op_type != "Conv" or conv.domain not in _ONNX or conv.attributes.get_int("group", 1) != 1:
        return 0
    source = _past_dequantize(conv.inputs[0])
    pad = source.producer() if source is not None else None
    if pad is None or pad.op_type != "Pad" or pad.domain not in _ONNX or len(conv.inputs) < 2:
        return 0  # (checked first: most convolutions stop here, before any weight is read)
    if pad.attributes.get_string("mode", "constant") != "constant" or len(pad.inputs) < 2:
        return 0
    weight, pads = _constant(_past_dequantize(conv.inputs[1])), _constant(pad.inputs[1])
    if weight is None or weight.ndim < 3 or pads is None or pads.shape != (2 * weight.ndim,):
        return 0
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return 0  # an axes input would say which axes the pads are for
    extra = int(pads[weight.ndim + 1])  # the end of axis 1, the channels
    if extra <= 0 or np.delete(pads, weight.ndim + 1).any() or extra >= weight.shape[1] or weight[:, -extra:].any():
        return 0
    return extra


def padded_weights(conv: ir.Node) -> int:
    """The weights of ``conv`` that meet only padded channels (``zero_padded_channels``): zeros."""
    extra = zero_padded_channels(conv)
    if not extra:
        return 0
    shape = _past_dequantize(conv.inputs[1]).const_value.shape
    return shape[0] * extra * prod(shape[2:])


def _past_dequantize(value: ir.Value | None) -> ir.Value | None:
    """``value``, or the quantized tensor a DequantizeLinear made it from."""
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.domain in _ONNX:
        return producer.inputs[0]
    return value


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    try:
        return value.const_value.numpy()
    except OSError:  # an external weight whose file this in-memory model cannot reach: counted as it is
        return None
