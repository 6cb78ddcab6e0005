"""Static model figures: parameters, MACs by op type, node histogram, size on disk.

Used by prune summaries, ``inspect`` and ``validate``. Pure graph analysis (onnx shape inference for the
MACs); nothing is executed.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.shape_folding import infer_at
from onnxkd.model import ModelLike, load

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class ModelStats:
    params: int
    macs_total: int
    macs_by_op: dict[str, int]
    node_count: int
    op_histogram: dict[str, int]  # op type (``domain::op`` outside ai.onnx) -> count, most frequent first
    size_bytes: int  # serialized model, external data included
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # the shapes the MACs were counted at
    macs_unknown: list[str] = field(default_factory=list)  # MAC nodes whose shapes inference left unknown


def count_params(model: ModelLike) -> int:
    """Elements of the floating-point initializers (fp64/32/16, bf16, fp8), each initializer once.

    What counts is what the file stores: weights, biases, and BatchNormalization scale, bias *and*
    running mean/var (they are float initializers too). A weight shared by several nodes counts once;
    integer/bool initializers (shapes, indices, masks) do not count. Float Constant nodes count too,
    since some exporters keep weights in them, and so do float ConstantOfShape nodes whose shape is a
    constant (the ONNX zoo's "light" models keep every weight that way; the torch bridge trains them as
    parameters). Subgraph initializers count.
    """
    graph_model = load(model)
    initializers = sum(
        value.const_value.size if value.const_value is not None else prod(_static_dims(value))
        for graph in graph_model.graphs()
        for value in graph.initializers.values()
        if value.dtype is not None and value.dtype.is_floating_point()
    )
    constants = sum(
        node.attributes["value"].value.size
        for node in ir.traversal.RecursiveGraphIterator(graph_model.graph)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in node.attributes
        and node.attributes["value"].value.dtype.is_floating_point()
    )
    return initializers + constants + _constant_of_shape_elements(graph_model)


def _constant_of_shape_elements(model: ir.Model) -> int:
    """Elements made by float ConstantOfShape nodes of a constant shape (weights the light models generate)."""
    total = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        value = node.attributes.get("value")
        if value is None or not value.value.dtype.is_floating_point():
            continue  # the default fill is float32 zeros: not a weight anyone would keep like this
        shape = node.inputs[0]
        tensor = shape.const_value if shape is not None else None
        if tensor is None and shape is not None and shape.producer() is not None \
                and shape.producer().op_type == "Constant" and "value" in shape.producer().attributes:
            tensor = shape.producer().attributes["value"].value
        if tensor is not None:
            total += prod(int(d) for d in tensor.numpy().reshape(-1))
    return total


def op_histogram(model: ModelLike) -> dict[str, int]:
    """Op type (``domain::op`` outside ai.onnx) -> count, subgraphs included, most frequent first."""
    histogram = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        for node in ir.traversal.RecursiveGraphIterator(load(model).graph)
    )
    return dict(sorted(histogram.items(), key=lambda item: (-item[1], item[0])))


def macs_and_unknown(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> tuple[dict[str, int], list[str]]:
    """``count_macs`` plus the names of MAC nodes whose shapes inference left unknown (not counted)."""
    by_op, unknown, _, _ = _macs(load(model), input_shapes)
    return by_op, unknown


def count_macs(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> dict[str, int]:
    """Multiply-accumulates of the main graph's Conv, ConvTranspose, Gemm and MatMul nodes, by op type.

    Shapes come from onnx shape inference with the graph inputs fixed to ``input_shapes`` (name -> full
    shape); dims of other inputs that are not numbers count as 1. Per node: Conv
    N*Cout*prod(out spatial)*(Cin/group)*prod(kernel); ConvTranspose, per input position,
    N*Cin*prod(in spatial)*(Cout/group)*prod(kernel); Gemm M*N*K; MatMul prod(batch)*M*N*K. Bias adds
    and all other ops are not counted; nodes whose shapes stay unknown are left out (``model_stats``
    lists them).
    """
    return _macs(load(model), input_shapes)[0]


def macs_by_node(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> dict[str, int]:
    """``count_macs`` per node (node name -> MACs), in graph order; nodes of unknown shape are left out."""
    return _macs(load(model), input_shapes)[3]


def model_stats(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> ModelStats:
    """All the figures above in one object (see ``count_params`` and ``count_macs`` for definitions)."""
    graph_model = load(model)
    by_op, unknown, shapes, _ = _macs(graph_model, input_shapes)
    histogram = op_histogram(graph_model)
    return ModelStats(
        params=count_params(graph_model),
        macs_total=sum(by_op.values()),
        macs_by_op=by_op,
        node_count=sum(histogram.values()),
        op_histogram=histogram,
        size_bytes=_size_bytes(model, graph_model),
        input_shapes=shapes,
        macs_unknown=unknown,
    )


def _macs(
    model: ir.Model, input_shapes: dict[str, list[int]] | None
) -> tuple[dict[str, int], list[str], dict[str, list[int]], dict[str, int]]:
    """(MACs by op type, nodes of unknown shape, the input shapes used, MACs by node name)."""
    shapes = _fixed_input_shapes(model, input_shapes or {})
    inferred = _infer(model, shapes)
    by_op: dict[str, int] = {}
    by_node: dict[str, int] = {}
    unknown: list[str] = []
    for node in model.graph:
        if node.op_type not in MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        macs = _node_macs(node, inferred)
        if macs is None:
            unknown.append(node.name or node.outputs[0].name)
        else:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
            by_node[node.name or node.outputs[0].name] = macs
    return by_op, unknown, shapes, by_node


def _fixed_input_shapes(model: ir.Model, given: dict[str, list[int]]) -> dict[str, list[int]]:
    inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    names = {v.name for v in inputs}
    if unknown := sorted(set(given) - names):
        raise OnnxkdError(f"input shape given for {unknown[0]!r}, which is not a graph input ({sorted(names)})")
    shapes = {}
    for value in inputs:
        if value.name in given:
            shapes[value.name] = [int(d) for d in given[value.name]]
        elif value.shape is not None:
            # a free batch counts one sample; a free height or length has no size to count at
            if free := [axis for axis, d in enumerate(value.shape) if axis > 0 and not isinstance(d, int)]:
                raise OnnxkdError(f"MACs not counted: input {value.name!r} has dynamic dims {free} and no size was "
                                  "given for them (--data or --input-shape)")
            shapes[value.name] = [d if isinstance(d, int) else 1 for d in value.shape]
    return shapes


def _infer(model: ir.Model, shapes: dict[str, list[int]]) -> dict[str, list[int] | None]:
    """Value name -> static shape (None where not fully known) after inference at ``shapes``."""

    proto = infer_at(model, shapes)
    result: dict[str, list[int] | None] = {}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        result[value.name] = _proto_shape(value)
    for tensor in proto.graph.initializer:
        result[tensor.name] = list(tensor.dims)
    return result


def _proto_shape(value: onnx.ValueInfoProto) -> list[int] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return None if any(d is None for d in dims) else dims


def _node_macs(node: ir.Node, shapes: dict[str, list[int] | None]) -> int | None:
    def shape(index: int, outputs: bool = False) -> list[int] | None:
        values = node.outputs if outputs else node.inputs
        value = values[index] if index < len(values) else None
        return shapes.get(value.name) if value is not None else None

    x, w, y = shape(0), shape(1), shape(0, outputs=True)
    if node.op_type == "Conv":  # W: [Cout, Cin/group, *kernel], one MAC per output element per W column
        return None if w is None or y is None else prod(y) * prod(w[1:])
    if node.op_type == "ConvTranspose":  # W: [Cin, Cout/group, *kernel], scattered from each input element
        return None if w is None or x is None else prod(x) * prod(w[1:])
    if node.op_type == "Gemm":
        if x is None or y is None:
            return None
        trans_a = node.attributes.get_int("transA", 0)
        return prod(y) * (x[0] if trans_a else x[1])
    if node.op_type == "MatMul":  # [..., M, K] @ [..., K, N] -> [..., M, N] (1-D operands promoted)
        return None if x is None or y is None else prod(y) * x[-1]
    return None


def _static_dims(value: ir.Value) -> list[int]:
    return [d if isinstance(d, int) else 0 for d in (value.shape or [])]


def _size_bytes(original: ModelLike, model: ir.Model) -> int:
    if isinstance(original, (str, os.PathLike)):
        path = Path(original)
        locations = {
            entry.value
            for tensor in _external_tensors(onnx.load(str(path), load_external_data=False))
            for entry in tensor.external_data
            if entry.key == "location"
        }
        return path.stat().st_size + sum((path.parent / name).stat().st_size for name in locations)
    proto = original if isinstance(original, onnx.ModelProto) else None
    if proto is not None:
        return proto.ByteSize() + sum(
            int(e.value) for t in _external_tensors(proto) for e in t.external_data if e.key == "length"
        )
    external = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                external += value.const_value.nbytes
    return ir.to_proto(model).ByteSize() + external


def _external_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
