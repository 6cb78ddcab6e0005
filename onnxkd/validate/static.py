"""Static figures from the graph: parameters, MACs by op type, node histogram, channels per layer.

Params count every element of the model's floating-point initializers (and of float Constant nodes,
where some exporters keep weights), and a quantized model's integer weights. MACs count Conv,
ConvTranspose, Gemm and MatMul and their integer forms (QLinearConv, QGemm, ...) only, at the given input
shapes after onnx shape inference; other ops are cheap next to them. The int8 part is counted apart.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxkd.graph_passes import metrics

# The counting itself lives with the graph passes (prune summaries and inspect use it too).
count_params = metrics.count_params
op_histogram = metrics.op_histogram


def count_macs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict:
    """``{"total", "int8", "by_op", "int8_by_op", "unknown_nodes"}``: MACs per op type and in total, the
    part of them whose operands are 8-bit integers; nodes whose shapes stay unknown are listed, not guessed."""
    return metrics.mac_summary(model, {k: list(v) for k, v in input_shapes.items()})


def node_count(model: onnx.ModelProto) -> int:
    return sum(op_histogram(model).values())


def channels_per_layer(model: onnx.ModelProto) -> dict[str, dict]:
    """Output channels of each MAC layer (Conv, Gemm, ..., QLinearConv) whose weight is a constant, keyed by
    node name. A QDQ model's weight is the constant its DequantizeLinear reads."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input and n.input[0] in weights}
    layers: dict[str, dict] = {}
    for index, node in enumerate(model.graph.node):
        rule = metrics.MAC_NODES.get(("" if node.domain == "ai.onnx" else node.domain, node.op_type))
        if rule is None or len(node.input) <= rule[2]:
            continue
        weight = dequantized.get(node.input[rule[2]], node.input[rule[2]])
        shape = weights.get(weight)
        if not shape:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kind = rule[0]
        if kind == "conv":
            channels = shape[0]
        elif kind == "conv_transpose":
            channels = shape[1] * attrs.get("group", 1)
        elif kind == "gemm":
            channels = shape[0] if attrs.get("transB", 0) else shape[-1]
        elif kind == "recurrent":  # hidden units: W is [directions, gates * hidden, input]
            channels = shape[1] // metrics.RECURRENT_GATES.get(node.op_type, 1)
        else:
            channels = shape[-1]
        key = node.name or weight or f"{node.op_type}_{index}"
        layers[key] = {"op_type": node.op_type, "weight": weight, "channels": int(channels)}
    return layers


# onnxruntime's quantize_static names a QOperator node "<float node>_quant" and its weight "<float weight>_quantized"
_QUANTIZED_SUFFIXES = ("_quantized", "_quant")


def compare_channels(teacher: dict[str, dict], student: dict[str, dict]) -> list[dict]:
    """Teacher vs student per layer, matched by node name, else by weight initializer name (a quantized
    student's names also with onnxruntime's suffixes taken off)."""
    by_name = {**{_float_name(k): v for k, v in student.items()}, **student}  # exact names first
    by_weight = {**{_float_name(v["weight"]): v for v in student.values()}, **{v["weight"]: v for v in student.values()}}
    rows = []
    for name, layer in teacher.items():
        match = by_name.get(name) or by_weight.get(layer["weight"])
        kept = match["channels"] if match else None
        rows.append({
            "layer": name,
            "op_type": layer["op_type"],
            "teacher": layer["channels"],
            "student": kept,
            "kept": None if kept is None else kept / layer["channels"],
        })
    return rows


def _float_name(name: str) -> str:
    """The name of a quantized node or weight's float original, as onnxruntime's quantizer derives it."""
    for suffix in _QUANTIZED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
