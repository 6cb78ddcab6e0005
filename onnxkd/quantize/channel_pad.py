"""Input channels padded to a multiple of 4 where that puts an int8 convolution on onnxruntime's fast kernel.

onnxruntime's x86 CPU runs a QLinearConv with symmetric int8 weights on MLAS's indirect-convolution kernel only
when its input channels are a multiple of 4 (and it has at least 16 output channels, a multiple of 8 on AVX2);
otherwise it builds an im2col buffer and multiplies with a general int8 GEMM. An RGB stem, 3 channels, always
takes the slow path: the zoo ResNet's 3x3 stem at 128x128 ran 1.96 ms in int8 against 0.84 ms in float.

Padding the quantized input with one channel of its zero point (a uint8 Pad, cheap) and the weights with a zero
column computes exactly the same outputs, on the fast kernel: that stem took 1.45 ms, and whole models ran
7-14% faster (batch 8; 3x3 and 5x5 stems). Large kernels lose: a 7x7 stem on 4 channels ran 7% slower, so
``quantize`` keeps the padding only where the profiler times the padded convolutions faster (speed.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxkd.model import load, save

ALIGN = 4  # the kernel reads input channels in groups of 4
MIN_OUTPUTS = 16  # the kernel packs output channels in blocks of 16 ...
OUTPUT_ALIGN = 8  # ... and needs a multiple of 8 (AVX2; 4 with AVX-512)
SUFFIX = "/input_channel_pad"  # the Pad node's name is its convolution's with this (profile.py adds it there)
_INT8 = (ir.DataType.INT8, ir.DataType.UINT8)


def paddable(model: ir.Model) -> list[ir.Node]:
    """The QDQ convolutions of the main graph whose input channels are not a multiple of ``ALIGN`` but would
    otherwise run on the indirect kernel: 2-D, one group, int8 weights with zero points 0, enough outputs."""
    return [node for node in model.graph if _paddable(node)]


def _paddable(node: ir.Node) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.attributes.get_int("group", 1) != 1:
        return False
    x_dq, w_dq = (value.producer() if value is not None else None for value in node.inputs[:2])
    if not (_is_dequantize(x_dq) and _is_dequantize(w_dq)):
        return False
    weight = w_dq.inputs[0]
    values = weight.const_value
    if values is None or values.dtype != ir.DataType.INT8 or len(values.shape) != 4 or len(weight.uses()) != 1:
        return False
    outputs, channels = values.shape[0], values.shape[1]
    zero = _constant(_zero_point(w_dq))
    return (channels % ALIGN != 0 and outputs >= MIN_OUTPUTS and outputs % OUTPUT_ALIGN == 0
            and (zero is None or not zero.any())
            and _quantized_activation(x_dq.inputs[0], x_dq.inputs[1], _zero_point(x_dq)))


def _is_dequantize(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")


def _zero_point(dequantize: ir.Node) -> ir.Value | None:
    return dequantize.inputs[2] if len(dequantize.inputs) > 2 else None


def _constant(value: ir.Value | None) -> np.ndarray | None:
    return value.const_value.numpy() if value is not None and value.const_value is not None else None


def _quantized_activation(value: ir.Value, scale: ir.Value, zero: ir.Value | None) -> bool:
    """An 8-bit tensor quantized per tensor: one scale, one zero point (onnxruntime's quantizer records no value
    type for it: its zero point's says it). A per-channel scale would not fit the padded channel."""
    if scale.const_value is None or scale.const_value.size != 1:
        return False
    if zero is None:
        return value.dtype in _INT8
    return zero.const_value is not None and zero.const_value.dtype in _INT8 and zero.const_value.size == 1


def pad_input_channels(model: ir.Model) -> list[str]:
    """Pad every ``paddable`` convolution of ``model`` in place; returns their names."""
    graph = model.graph
    padded = []
    for conv in paddable(model):
        x_dq, w_dq = conv.inputs[0].producer(), conv.inputs[1].producer()
        weight = w_dq.inputs[0]
        values = weight.const_value.numpy()
        extra = -values.shape[1] % ALIGN
        weight.const_value = ir.tensor(np.pad(values, ((0, 0), (0, extra), (0, 0), (0, 0))), name=weight.name)
        for value in (weight, w_dq.outputs[0]):  # shapes recorded from the float model (value_info) must follow
            if value.shape is not None:
                value.shape = ir.Shape(weight.const_value.shape)
        pads = ir.Value(name=f"{conv.name}{SUFFIX}/pads",
                        const_value=ir.tensor(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64)))
        graph.register_initializer(pads)
        quantized, scale, zero = x_dq.inputs[0], x_dq.inputs[1], _zero_point(x_dq)
        # the new channel holds the zero point: it dequantizes to 0.0 (the zero weights make any value exact)
        pad = ir.node("Pad", [quantized, pads] + ([zero] if zero is not None else []), name=f"{conv.name}{SUFFIX}")
        dequantize = ir.node("DequantizeLinear", [pad.outputs[0], scale] + ([zero] if zero is not None else []),
                             name=f"{conv.name}{SUFFIX}/dequantize")
        pad.outputs[0].name, dequantize.outputs[0].name = f"{conv.name}{SUFFIX}", f"{conv.name}{SUFFIX}/dequantized"
        graph.insert_before(conv, [pad, dequantize])
        conv.replace_input_with(0, dequantize.outputs[0])
        if not x_dq.outputs[0].uses():
            graph.remove(x_dq, safe=True)
        padded.append(conv.name)
    return padded


def padded_copy(path: Path, out: Path) -> tuple[Path, list[str]] | None:
    """``path`` with its paddable convolutions padded, written to ``out``, and their names; None when it has
    none (nothing written)."""
    model = load(path)
    names = pad_input_channels(model)
    return (save(model, out), names) if names else None


def padded_convolutions(nodes: Iterable[ir.Node | onnx.NodeProto]) -> list[str]:
    """The convolutions whose inputs ``pad_input_channels`` padded, among a model's nodes (an ``ir.Graph``, or a
    ``GraphProto``'s ``node``)."""
    return [node.name[: -len(SUFFIX)] for node in nodes if node.op_type == "Pad" and node.name.endswith(SUFFIX)]
