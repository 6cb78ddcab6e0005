"""Static figures from the graph: parameters, MACs by op type, node histogram, channels per layer.

Params count every element of the model's floating-point initializers (and of float Constant nodes,
where some exporters keep weights). MACs count Conv, ConvTranspose, Gemm and MatMul only, at the
given input shapes after onnx shape inference; other ops are cheap next to them.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxkd.graph_passes import metrics

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# The counting itself lives with the graph passes (prune summaries and inspect use it too).
count_params = metrics.count_params
op_histogram = metrics.op_histogram


def count_macs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict:
    """MACs per op type and in total; nodes whose shapes stay unknown are listed, not guessed."""
    by_op, unknown = metrics.macs_and_unknown(model, {k: list(v) for k, v in input_shapes.items()})
    return {"total": int(sum(by_op.values())), "by_op": by_op, "unknown_nodes": unknown}


def node_count(model: onnx.ModelProto) -> int:
    return sum(op_histogram(model).values())


def channels_per_layer(model: onnx.ModelProto) -> dict[str, dict]:
    """Output channels of each Conv/ConvTranspose/Gemm/MatMul whose weight is a constant, keyed by node name."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    layers: dict[str, dict] = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type not in MAC_OPS or len(node.input) < 2 or node.input[1] not in weights:
            continue
        shape = weights[node.input[1]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not shape:
            continue
        if node.op_type == "Conv":
            channels = shape[0]
        elif node.op_type == "ConvTranspose":
            channels = shape[1] * attrs.get("group", 1)
        elif node.op_type == "Gemm":
            channels = shape[0] if attrs.get("transB", 0) else shape[-1]
        else:
            channels = shape[-1]
        key = node.name or node.input[1] or f"{node.op_type}_{index}"
        layers[key] = {"op_type": node.op_type, "weight": node.input[1], "channels": int(channels)}
    return layers


def compare_channels(teacher: dict[str, dict], student: dict[str, dict]) -> list[dict]:
    """Teacher vs student per layer, matched by node name, else by weight initializer name."""
    by_weight = {v["weight"]: v for v in student.values()}
    rows = []
    for name, layer in teacher.items():
        match = student.get(name) or by_weight.get(layer["weight"])
        kept = match["channels"] if match else None
        rows.append({
            "layer": name,
            "op_type": layer["op_type"],
            "teacher": layer["channels"],
            "student": kept,
            "kept": None if kept is None else kept / layer["channels"],
        })
    return rows
