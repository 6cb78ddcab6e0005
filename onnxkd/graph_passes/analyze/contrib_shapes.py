"""Output shapes of onnxruntime's com.microsoft quantized ops, which onnx shape inference does not know.

A QOperator model (``quantize_static(..., quant_format=QOperator)``) puts them between the default-domain
QLinearConv/QLinearMatMul nodes: a QLinearAdd closes every residual block, a QLinearGlobalAveragePool and a
QGemm end a CNN. onnx leaves their outputs without a shape, and so everything after the first residual.
Each op here has the shape rule of an ONNX op (QLinearAdd broadcasts like Add, QLinearConv is Conv), which
onnx's own inference applies to the op's data inputs; ops not listed stay unknown (nothing is guessed).
``shape_folding.infer_with_folded_shapes`` calls this between its rounds.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

MICROSOFT = "com.microsoft"

# op -> (ONNX op and version whose shape rule it has, its data inputs, the input whose type the output has).
# The versions are fixed: they are the contrib ops' semantics (ReduceMean with an axes attribute), not the model's.
_RULES: dict[str, tuple[str, int, tuple[int, ...] | None, int]] = {
    "QuantizeLinear": ("Identity", 1, (0,), 2),
    "DequantizeLinear": ("Identity", 1, (0,), 1),
    "QLinearSigmoid": ("Identity", 1, (0,), 4),
    "QLinearLeakyRelu": ("Identity", 1, (0,), 4),
    "QLinearSoftmax": ("Identity", 1, (0,), 4),
    "QLinearAdd": ("Add", 14, (0, 3), 7),
    "QLinearMul": ("Mul", 14, (0, 3), 7),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", 1, (0,), 4),
    "QLinearAveragePool": ("AveragePool", 19, (0,), 4),
    "QLinearConv": ("Conv", 11, (0, 3), 7),
    "QGemm": ("Gemm", 13, (0, 3), 8),
    "QLinearConcat": ("Concat", 13, None, 1),  # Y_scale, Y_zero_point, then (X, scale, zero point) per input
    "QLinearReduceMean": ("ReduceMean", 13, (0,), 4),
}


def output_types(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The types of the outputs of the com.microsoft nodes above that have none yet and whose inputs' shapes
    are known, in graph order (a chain of them resolves in one call). ``record`` them and run onnx shape
    inference again: it continues past the nodes."""
    graph = proto.graph
    types = {v.name: v.type.tensor_type for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes = {name: _dims(t) for name, t in types.items()}
    dtypes = {name: t.elem_type for name, t in types.items() if t.elem_type}
    for tensor in graph.initializer:
        shapes[tensor.name], dtypes[tensor.name] = list(tensor.dims), tensor.data_type
    found = []
    for node in graph.node:
        if node.domain != MICROSOFT or node.op_type not in _RULES or not node.output or shapes.get(node.output[0]):
            continue
        shape, dtype = _output_shape(node, shapes), _output_type(node, dtypes)
        if shape is None or not dtype:
            continue
        name = node.output[0]
        shapes[name], dtypes[name] = shape, dtype
        found.append(helper.make_tensor_value_info(name, dtype, shape))
    return found


def record(proto: onnx.ModelProto, types: list[onnx.ValueInfoProto]) -> None:
    """Put ``types`` into the graph: a graph output's into graph.output (where inference left it empty),
    the others into value_info."""
    outputs = {v.name: v for v in proto.graph.output}
    for value in types:
        if value.name in outputs:
            outputs[value.name].CopyFrom(value)
        else:
            proto.graph.value_info.append(value)


def _output_shape(node: onnx.NodeProto, shapes: dict[str, list[int] | None]) -> list[int] | None:
    onnx_op, version, data, _ = _RULES[node.op_type]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.pop("channels_last", 0):
        return None  # NHWC: ONNX's rule is for NCHW, and the layout is the op's own
    inputs = list(node.input[2::3]) if data is None else [node.input[i] if i < len(node.input) else "" for i in data]
    if any(not name or shapes.get(name) is None for name in inputs):
        return None
    if onnx_op == "Identity":
        return shapes[inputs[0]]
    schema = onnx.defs.get_schema(onnx_op, version)
    stand_in = helper.make_node(onnx_op, inputs, [node.output[0]],
                                **{k: v for k, v in attributes.items() if k in schema.attributes})
    # the shape rules do not depend on the element type: float inputs satisfy every schema
    types = {name: helper.make_tensor_type_proto(TensorProto.FLOAT, shapes[name]) for name in inputs}
    try:
        inferred = onnx.shape_inference.infer_node_outputs(schema, stand_in, types)
    except Exception:  # noqa: BLE001  (inconsistent shapes or attributes: the shape stays unknown)
        return None
    result = inferred.get(node.output[0])
    return _dims(result.tensor_type) if result is not None else None


def _output_type(node: onnx.NodeProto, dtypes: dict[str, int]) -> int | None:
    index = _RULES[node.op_type][3]
    if index < len(node.input) and node.input[index]:
        return dtypes.get(node.input[index])
    if node.op_type == "QGemm" and not (len(node.input) > 7 and node.input[7]):
        return TensorProto.FLOAT  # without y_scale, QGemm's output is the float accumulator, rescaled
    return TensorProto.UINT8  # an omitted zero point is a uint8 zero


def _dims(tensor_type: onnx.TypeProto.Tensor) -> list[int] | None:
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return None if any(d is None for d in dims) else dims
