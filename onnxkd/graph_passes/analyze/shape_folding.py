"""Shape inference that sees through exporters' shape arithmetic once the input shapes are fixed.

The legacy torch exporter computes slice ends and reshape targets at run time (Shape -> Gather ->
Unsqueeze -> Concat -> Slice/Reshape). onnx's shape inference gives up on those, so every tensor
downstream loses its shape and MACs cannot be counted. With static input shapes those chains are
constants: evaluate them with onnx's reference implementation and infer again, until nothing changes.
Only small integer tensors are evaluated, never weights. The same rounds carry shapes through onnxruntime's
quantized com.microsoft ops (a QOperator model's QLinearAdd, QGemm, ...), which onnx does not know.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxkd.graph_passes.analyze import contrib_shapes

# Ops that appear in shape arithmetic; anything else is left to the real graph.
_FOLDABLE = {
    "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Add", "Sub", "Mul", "Div", "Neg",
    "Range", "Equal", "Where", "Expand", "Reshape", "ConstantOfShape", "Identity", "Min", "Max", "Floor", "Ceil", "Sqrt",
    "Transpose",  # torch's legacy export of ReflectionPad2d computes its pads through one
}
_MAX_ELEMENTS = 64
_MAX_ROUNDS = 32  # a QOperator transformer alternates contrib ops and shape arithmetic ~12 times


def infer_at(model, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A proto of ``model`` (an onnx_ir Model, not modified) with its inputs fixed to ``shapes`` and every shape
    inferred again through folded shape arithmetic."""
    from onnx_ir.passes.common import _c_api_utils

    from onnxkd.model import graph_copy

    def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
        for value in proto.graph.input:
            if value.name in shapes:
                dims = value.type.tensor_type.shape
                del dims.dim[:]
                for d in shapes[value.name]:
                    dims.dim.add().dim_value = d
        # recorded shapes hold the old (symbolic) dims: let inference redo them at the fixed ones
        del proto.graph.value_info[:]
        for value in proto.graph.output:
            value.type.tensor_type.ClearField("shape")
        return infer_with_folded_shapes(proto)

    # call_onnx_api leaves large initializers out of the proto (typed inputs instead), so a > 2 GB model
    # works; it puts them back in another order and fills in value types, so it gets a clone (which shares
    # the tensors): the caller's model stays exactly as it was.
    return _c_api_utils.call_onnx_api(infer, graph_copy(model))


def infer_with_folded_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` after folding shape arithmetic into initializers, and through
    onnxruntime's quantized com.microsoft ops (``contrib_shapes``) (a copy)."""
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    contrib: list[onnx.ValueInfoProto] = []  # not inference's own: put back each time it starts afresh
    for _ in range(_MAX_ROUNDS):
        found = contrib_shapes.output_types(proto)
        contrib += found
        if not _fold_once(proto, opset, initializers_are_inputs=proto.ir_version < 4) and not found:
            break
        del proto.graph.value_info[:]
        contrib_shapes.record(proto, contrib)
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    return proto


def _fold_once(proto: onnx.ModelProto, opset: int, initializers_are_inputs: bool) -> bool:
    graph = proto.graph
    values = _small_constants(graph)
    shapes = _static_shapes(graph)
    kept, folded = [], []
    for node in graph.node:
        outputs = _evaluate(node, values, shapes, opset)
        if outputs is None:
            kept.append(node)
            continue
        for name, array in zip(node.output, outputs):
            values[name] = array
            folded.append(numpy_helper.from_array(np.asarray(array), name))
    if not folded:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    if initializers_are_inputs:  # IR version < 4: inference only sees initializers that are graph inputs
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in folded)
    return True


def _evaluate(node: onnx.NodeProto, values: dict, shapes: dict, opset: int) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Shape":
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return [np.array(dims, np.int64)[attrs.get("start", 0): attrs.get("end", len(dims))]]
    if node.op_type == "Constant":
        return None  # already a value (see _small_constants); folding it would only move it
    if node.op_type not in _FOLDABLE or not node.input:
        return None
    inputs = [values.get(name) if name else None for name in node.input]
    if any(name and value is None for name, value in zip(node.input, inputs)) or _grows_large(node.op_type, inputs):
        return None
    model = helper.make_model(
        helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output],
                          [numpy_helper.from_array(v, n) for n, v in zip(node.input, inputs) if n]),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    try:
        outputs = ReferenceEvaluator(model).run(None, {})
    except Exception:  # noqa: BLE001  (a node the reference cannot run simply stays in the graph)
        return None
    if any(np.asarray(o).size > _MAX_ELEMENTS for o in outputs):
        return None
    return [np.asarray(o) for o in outputs]


def _grows_large(op_type: str, inputs: list) -> bool:
    """Whether an op that builds its output from sizes would build more than ``_MAX_ELEMENTS`` (kept anyway): a
    causal mask Expand-ed to [length, length] at the stand-in length took seconds to evaluate, to be dropped."""
    try:
        if op_type == "Expand":
            size = np.prod(np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1])))
        elif op_type == "ConstantOfShape":
            size = np.prod(inputs[0])
        elif op_type == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in inputs[:3])
            size = np.ceil((limit - start) / delta)
        else:
            return False
    except Exception:  # noqa: BLE001  (inputs the op itself would reject: let the evaluation say so)
        return False
    return size > _MAX_ELEMENTS


def _small_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {}
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims)) <= _MAX_ELEMENTS and tensor.data_location != onnx.TensorProto.EXTERNAL:
            values[tensor.name] = numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            array = numpy_helper.to_array(node.attribute[0].t)
            if array.size <= _MAX_ELEMENTS:
                values[node.output[0]] = array
    return values


def _static_shapes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
            if all(d is not None for d in dims):
                shapes[value.name] = dims
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes
