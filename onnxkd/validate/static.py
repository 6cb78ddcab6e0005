"""Static figures from the graph: parameters, MACs by op type, node histogram, channels per layer.

Params count every element of the model's floating-point initializers (and of float Constant nodes,
where some exporters keep weights). MACs count Conv, ConvTranspose, Gemm and MatMul only, at the
given input shapes after onnx shape inference; other ops are cheap next to them.
"""

from __future__ import annotations

import copy
from collections import Counter
from math import prod

import onnx
from onnx import helper

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def count_params(model: onnx.ModelProto) -> int:
    total = sum(prod(t.dims) for t in model.graph.initializer if t.data_type in FLOAT_TYPES)
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in FLOAT_TYPES:
                    total += prod(attr.t.dims)
    return int(total)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count, subgraphs (If/Loop bodies) included; custom domains shown as domain::op."""
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                     for n in _all_nodes(model.graph))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def count_macs(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict:
    """MACs per op type and in total; nodes whose shapes stay unknown are counted, not guessed."""
    shapes = _inferred_shapes(model, input_shapes)
    by_op: dict[str, int] = {}
    unknown: list[str] = []
    for node in model.graph.node:
        if node.op_type not in MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown.append(node.name or node.output[0])
        else:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return {"total": int(sum(by_op.values())), "by_op": by_op, "unknown_nodes": unknown}


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int] | None]) -> int | None:
    ins = [shapes.get(name) if name else None for name in node.input]
    out = shapes.get(node.output[0])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        weight = ins[1] if len(ins) > 1 else None
        if out is None or weight is None:
            return None
        # each output element: Cin/group * prod(kernel) multiply-adds
        return prod(out) * prod(weight[1:])
    if node.op_type == "ConvTranspose":
        x, weight = ins[0], (ins[1] if len(ins) > 1 else None)
        if x is None or weight is None:
            return None
        # each input element scatters into Cout/group * prod(kernel) outputs; weight is [Cin, Cout/group, *k]
        return prod(x) * prod(weight[1:])
    if node.op_type == "Gemm":
        a, b = ins[0], ins[1]
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
        n = b[0] if attrs.get("transB", 0) else b[1]
        return m * n * k
    if node.op_type == "MatMul":
        a = ins[0]
        if a is None or out is None or len(a) == 0:
            return None
        # every output element is a dot product over A's last axis (batch dims broadcast)
        return prod(out) * a[-1]
    return None


def _inferred_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, list[int] | None]:
    model = copy.deepcopy(model)
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for d in input_shapes[value.name]:
                dims.add().dim_value = int(d)
    # exporters leave stale value_info for dynamic dims; drop it so inference recomputes at these shapes
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; nodes left unknown are reported as such
        pass
    shapes: dict[str, list[int] | None] = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shapes[value.name] = None if any(d is None for d in dims) else dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
    return shapes


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


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def node_count(model: onnx.ModelProto) -> int:
    return sum(1 for _ in _all_nodes(model.graph))


