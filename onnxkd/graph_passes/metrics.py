"""Static model figures: parameters, MACs by op type (and how many are int8), node histogram, size on disk.

Used by prune summaries, ``inspect`` and ``validate``. Pure graph analysis (onnx shape inference for the
MACs); nothing is executed. Quantized models count like their float originals: the same MACs (int8 ones
told apart) and the same parameters (int8 weights, int32 biases), whether written as QDQ (float ops between
QuantizeLinear/DequantizeLinear) or with integer ops (QLinearConv, MatMulInteger, com.microsoft QGemm).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxkd.data.batch_axes import declared_batch_axes
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze import contrib_shapes
from onnxkd.graph_passes.analyze.padded_channels import padded_weights, zero_padded_channels
from onnxkd.graph_passes.analyze.shape_folding import infer_at
from onnxkd.model import ModelLike, load

MICROSOFT = contrib_shapes.MICROSOFT

# (domain, op type) -> (shape rule, input index of the activation/A, of the weight/B). The integer ops
# read 8-bit tensors; a float op's MACs are int8 when both operands are dequantized 8-bit tensors (a QDQ
# model: onnxruntime runs DequantizeLinear -> Conv as one integer kernel). com.microsoft has no other op
# worth counting (QLinearAdd and the like are elementwise).
MAC_NODES: dict[tuple[str, str], tuple[str, int, int]] = {
    ("", "Conv"): ("conv", 0, 1),
    ("", "ConvTranspose"): ("conv_transpose", 0, 1),
    ("", "Gemm"): ("gemm", 0, 1),
    ("", "MatMul"): ("matmul", 0, 1),
    ("", "Einsum"): ("einsum", 0, 1),
    ("", "LSTM"): ("recurrent", 0, 1),
    ("", "GRU"): ("recurrent", 0, 1),
    ("", "RNN"): ("recurrent", 0, 1),
    ("", "QLinearConv"): ("conv", 0, 3),
    ("", "QLinearMatMul"): ("matmul", 0, 3),
    ("", "ConvInteger"): ("conv", 0, 1),
    ("", "MatMulInteger"): ("matmul", 0, 1),
    (MICROSOFT, "QLinearConv"): ("conv", 0, 3),
    (MICROSOFT, "QGemm"): ("gemm", 0, 3),
}
# gates stacked on axis 1 of a recurrent node's W and R ([directions, gates * hidden, ...])
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_INT8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


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
    macs_int8: int = 0  # the part of macs_total whose operands are 8-bit integers


@dataclass
class NodeMacs:
    op: str  # op type (``domain::op`` outside ai.onnx)
    macs: int
    int8: bool  # both operands 8-bit integers: an integer op, or dequantized from 8-bit tensors


def count_params(model: ModelLike) -> int:
    """Elements of the floating-point initializers (fp64/32/16, bf16, fp8), each initializer once, and of
    a quantized model's integer weights.

    What counts is what the file stores: weights, biases, and BatchNormalization scale, bias *and*
    running mean/var (they are float initializers too). A weight shared by several nodes counts once;
    integer/bool initializers (shapes, indices, masks) do not count, except quantized weights and biases
    (see ``is_parameter``), so a quantized model has its float original's count. Float Constant nodes
    count too, since some exporters keep weights in them, and so do float ConstantOfShape nodes whose
    shape is a constant (the ONNX zoo's "light" models keep every weight that way; the torch bridge
    trains them as parameters). Subgraph initializers count.
    """
    graph_model = load(model)
    initializers = sum(
        _elements(value)
        for graph in graph_model.graphs()
        for value in graph.initializers.values()
        if is_parameter(value.dtype, value.uses())
    )
    constants = sum(
        tensor.size
        for node in ir.traversal.RecursiveGraphIterator(graph_model.graph)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in node.attributes
        and is_parameter((tensor := node.attributes["value"].value).dtype, node.outputs[0].uses())
    )
    return initializers + constants + _constant_of_shape_elements(graph_model) - sum(map(padded_weights, graph_model.graph))


def is_parameter(dtype: ir.DataType | None, uses) -> bool:
    """Whether a constant of ``dtype`` read at ``uses`` ((node, input index) pairs) is a parameter.

    Float ones are, as in a float model. Integer ones only as a quantized model's data: 8-bit ones
    wherever they are read (int8 weights for DequantizeLinear or QLinearConv, and a quantized embedding
    table for Gather), wider ones (int32 biases, int16 weights) where a quantization op reads them as data.
    Scales and zero points are not, per-channel ones included: they say how the weights are stored, not
    more weights, and counting them would make an int8 model of the same layers "larger" than its float
    original (the zoo ResNet's QDQ form would have 2% more parameters). The file size shows what they take.
    """
    if dtype is None:
        return False
    roles = {_quantization_role(node, index) for node, index in uses}
    if roles == {"scale"}:
        return False
    if dtype in (ir.DataType.INT8, ir.DataType.UINT8):
        return True
    return dtype.is_floating_point() or (dtype.is_integer() and roles == {"data"})


# Where quantization ops read quantized data (weights, int32 biases, a quantized constant operand); their
# other inputs are scales and zero points. A QLinear* op not listed reads data at input 0.
_DATA_INPUTS = {
    "QuantizeLinear": (0,), "DequantizeLinear": (0,),
    "QLinearConv": (0, 3, 8), "QLinearMatMul": (0, 3), "QGemm": (0, 3, 6), "QLinearAdd": (0, 3), "QLinearMul": (0, 3),
    "ConvInteger": (0, 1), "MatMulInteger": (0, 1), "MatMulIntegerToFloat": (0, 1, 6), "DynamicQuantizeMatMul": (0, 1, 4),
}


def _quantization_role(node: ir.Node, index: int) -> str | None:
    """"data" or "scale" (scale or zero point) at a quantization op's input ``index``; None for other ops."""
    if node.domain not in ("", "ai.onnx", MICROSOFT):
        return None
    if node.op_type == "Mul" and any(_made_by(value, "DynamicQuantizeLinear") for value in node.inputs):
        return "scale"  # dynamic quantization: a weight's scale times the activation's, found at run time
    if node.op_type == "Pad" and index == 2:
        return "scale"  # the fill value (of a padded int8 input: its zero point) says how padding reads, no weight
    if node.op_type == "QLinearConcat":  # Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input
        return "data" if index >= 2 and (index - 2) % 3 == 0 else "scale"
    if node.op_type in _DATA_INPUTS or node.op_type.startswith("QLinear"):
        return "data" if index in _DATA_INPUTS.get(node.op_type, (0,)) else "scale"
    return None


def _made_by(value: ir.Value | None, op_type: str) -> bool:
    return value is not None and value.producer() is not None and value.producer().op_type == op_type


def _elements(value: ir.Value) -> int:
    return value.const_value.size if value.const_value is not None else prod(_static_dims(value))


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
    nodes, unknown, _ = _macs(load(model), input_shapes)
    return _by_op(nodes), unknown


def count_macs(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> dict[str, int]:
    """Multiply-accumulates of the main graph's Conv, ConvTranspose, Gemm and MatMul nodes, by op type, and
    of their integer forms (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, com.microsoft QGemm and
    QLinearConv; keyed ``domain::op`` outside ai.onnx).

    Shapes come from onnx shape inference with the graph inputs fixed to ``input_shapes`` (name -> full
    shape), carried through onnxruntime's quantized com.microsoft ops (``contrib_shapes``); dims of other
    inputs that are not numbers count as 1. Per node: Conv N*Cout*prod(out spatial)*(Cin/group)*prod(kernel);
    ConvTranspose, per input position, N*Cin*prod(in spatial)*(Cout/group)*prod(kernel); Gemm M*N*K;
    MatMul prod(batch)*M*N*K; Einsum prod(output)*prod(summed-over dims); LSTM, GRU and RNN
    seq*batch*directions*gates*hidden*(input + hidden). Bias adds
    and all other ops are not counted; nodes whose shapes stay unknown are left out (``model_stats`` lists them).
    """
    return _by_op(_macs(load(model), input_shapes)[0])


def mac_summary(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> dict:
    """``{"total", "int8", "by_op", "int8_by_op", "unknown_nodes", "input_shapes"}``: ``count_macs`` with the
    part whose operands are 8-bit integers (0 for a float model); ``total`` counts every MAC, int8 ones included;
    ``input_shapes``: the shapes they were counted at (a model's fixed batch, else 1)."""
    nodes, unknown, shapes = _macs(load(model), input_shapes)
    by_op, int8_by_op = _by_op(nodes), _by_op({k: n for k, n in nodes.items() if n.int8})
    return {"total": sum(by_op.values()), "int8": sum(int8_by_op.values()), "by_op": by_op,
            "int8_by_op": int8_by_op, "unknown_nodes": unknown, "input_shapes": shapes}


def macs_by_node(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> dict[str, int]:
    """``count_macs`` per node (node name -> MACs), in graph order; nodes of unknown shape are left out."""
    return {name: node.macs for name, node in _macs(load(model), input_shapes)[0].items()}


def model_stats(model: ModelLike, input_shapes: dict[str, list[int]] | None = None) -> ModelStats:
    """All the figures above in one object (see ``count_params`` and ``count_macs`` for definitions)."""
    graph_model = load(model)
    nodes, unknown, shapes = _macs(graph_model, input_shapes)
    by_op = _by_op(nodes)
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
        macs_int8=sum(node.macs for node in nodes.values() if node.int8),
    )


def _macs(
    model: ir.Model, input_shapes: dict[str, list[int]] | None
) -> tuple[dict[str, NodeMacs], list[str], dict[str, list[int]]]:
    """(MACs by node name in graph order, nodes of unknown shape, the input shapes used)."""
    shapes = _fixed_input_shapes(model, input_shapes or {})
    inferred, dtypes = _infer(model, shapes)
    by_node: dict[str, NodeMacs] = {}
    unknown: list[str] = []
    for node in model.graph:
        domain = "" if node.domain == "ai.onnx" else node.domain
        rule = MAC_NODES.get((domain, node.op_type))
        if rule is None:
            continue
        name = node.name or node.outputs[0].name
        macs = _node_macs(node, rule, inferred)
        if macs is None:
            unknown.append(name)
        else:
            operands = [node.inputs[i] if i < len(node.inputs) else None for i in rule[1:]]
            by_node[name] = NodeMacs(node.op_type if not domain else f"{domain}::{node.op_type}", macs,
                                     all(_is_8bit(value, dtypes) for value in operands))
    return by_node, unknown, shapes


def _by_op(nodes: dict[str, NodeMacs]) -> dict[str, int]:
    by_op: dict[str, int] = {}
    for node in nodes.values():
        by_op[node.op] = by_op.get(node.op, 0) + node.macs
    return by_op


def _is_8bit(value: ir.Value | None, dtypes: dict[str, int]) -> bool:
    """An 8-bit integer tensor, or the float a DequantizeLinear makes of one."""
    if value is None:
        return False
    if _made_by(value, "DequantizeLinear") and value.producer().domain in ("", "ai.onnx", MICROSOFT):
        value = value.producer().inputs[0]
    return value is not None and dtypes.get(value.name) in _INT8


def _fixed_input_shapes(model: ir.Model, given: dict[str, list[int]]) -> dict[str, list[int]]:
    inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    names = {v.name for v in inputs}
    if unknown := sorted(set(given) - names):
        raise OnnxkdError(f"input shape given for {unknown[0]!r}, which is not a graph input ({sorted(names)})")
    shapes = {}
    batch_axes = declared_batch_axes(model.graph)  # a seq-first input's batch is its axis 1
    for value in inputs:
        if value.name in given:
            shapes[value.name] = [int(d) for d in given[value.name]]
        elif value.shape is not None:
            # a free batch counts one sample; a free height or length has no size to count at
            batch = batch_axes.get(value.name, 0)
            if free := [axis for axis, d in enumerate(value.shape) if axis != batch and not isinstance(d, int)]:
                raise OnnxkdError(f"MACs not counted: input {value.name!r} has dynamic dims {free} and no size was "
                                  "given for them (--data or --input-shape)")
            shapes[value.name] = [d if isinstance(d, int) else 1 for d in value.shape]
    return shapes


def _infer(model: ir.Model, shapes: dict[str, list[int]]) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    """(value name -> static shape (None where not fully known), value name -> element type) after
    inference at ``shapes``."""
    proto = infer_at(model, shapes)
    result: dict[str, list[int] | None] = {}
    dtypes: dict[str, int] = {}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        result[value.name] = _proto_shape(value)
        dtypes[value.name] = value.type.tensor_type.elem_type
    for tensor in proto.graph.initializer:
        result[tensor.name] = list(tensor.dims)
        dtypes[tensor.name] = tensor.data_type
    return result, dtypes


def _proto_shape(value: onnx.ValueInfoProto) -> list[int] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return None if any(d is None for d in dims) else dims


def _node_macs(node: ir.Node, rule: tuple[str, int, int], shapes: dict[str, list[int] | None]) -> int | None:
    def shape(index: int, outputs: bool = False) -> list[int] | None:
        values = node.outputs if outputs else node.inputs
        value = values[index] if index < len(values) else None
        return shapes.get(value.name) if value is not None else None

    kind, x_index, w_index = rule
    x, w, y = shape(x_index), shape(w_index), shape(0, outputs=True)
    if kind == "conv":  # W: [Cout, Cin/group, *kernel], one MAC per output element per W column
        # (less the columns of input channels padded in for a faster kernel: zeros, no work of the model's)
        return None if w is None or y is None else prod(y) * (w[1] - zero_padded_channels(node)) * prod(w[2:])
    if kind == "conv_transpose":  # W: [Cin, Cout/group, *kernel], scattered from each input element
        return None if w is None or x is None else prod(x) * prod(w[1:])
    if kind == "gemm":
        if x is None:
            return None
        m, k = (x[1], x[0]) if node.attributes.get_int("transA", 0) else (x[0], x[1])
        if y is not None:
            return prod(y) * k
        if w is None:
            return None
        # an output onnx could not infer (com.microsoft QGemm past an unknown op): [M, N] follows from A and B
        return m * (w[0] if node.attributes.get_int("transB", 0) else w[1]) * k
    if kind == "matmul":  # [..., M, K] @ [..., K, N] -> [..., M, N] (1-D operands promoted)
        return None if x is None or y is None else prod(y) * x[-1]
    if kind == "einsum":  # one MAC per output element per combination of the summed-over letters
        return None if y is None else _einsum_macs(node, y, [shape(i) for i in range(len(node.inputs))])
    if kind == "recurrent":  # every step, each direction's gates read the input (W) and the hidden state (R)
        r = shape(2)
        if x is None or w is None or r is None:
            return None
        steps_and_batch = x[0] * x[1]  # [seq, batch, input], or [batch, seq, input] with layout=1
        return steps_and_batch * w[0] * w[1] * (w[2] + r[2])
    return None


def _einsum_macs(node: ir.Node, output: list[int], shapes: list[list[int] | None]) -> int | None:
    """prod(output) * the sizes of the letters summed over ("bij,bjk->bik": j); 0 for a single operand (a
    transpose or a trace: no multiply-accumulates); None where shapes are unknown."""
    equation = node.attributes.get_string("equation", "").replace(" ", "")
    inputs, _, result = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) < 2:
        return 0
    if any(s is None for s in shapes) or len(terms) != len(shapes):
        return None
    letters = [c for term in terms for c in term if c.isalpha()]
    if not result and "->" not in equation:  # implicit output: the letters that appear once
        result = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes: dict[str, int] = {}
    for term, dims in zip(terms, shapes):
        explicit = term.replace("...", "")
        if "..." in term:  # the ellipsis stands for the dims the letters do not name
            start = term.index("...")
            dims = dims[:start] + dims[len(dims) - (len(explicit) - start):] if len(explicit) > start else dims[:start]
        if len(explicit) != len(dims):
            return None
        for c, d in zip(explicit, dims):
            sizes[c] = max(sizes.get(c, 1), d)
    summed = set(sizes) - set(result)
    return prod(output) * prod(sizes[c] for c in summed)


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
