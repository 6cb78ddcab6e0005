"""A Gather that reads a flattened tensor back in its own order becomes the tensor (the dynamo exporter's
as_strided).

A channels_last model (moved to ``torch.channels_last`` for speed, or one that permutes an NHWC input) is
exported by the dynamo exporter with its Flatten after global pooling as as_strided: Reshape(x, [-1]), then a
Gather whose indices are computed as Range(batch) * C plus a constant table of channel offsets. Those indices
bake the channel count in, so the analysis froze the last convolution's channels. Where the indices are
0, 1, 2, ... laid out in x's own shape, at two sets of stand-in sizes, the Gather returns x: it is replaced by
x, exactly.
"""

from __future__ import annotations

from math import prod

import numpy as np
import onnx_ir as ir
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxkd.graph_passes.analyze.concrete_shapes import shapes_at_two_sizes
from onnxkd.model import opset_of

# Ops the index arithmetic is made of; anything else (a tensor's values, not its shape) is never evaluated.
_INDEX_OPS = {"Range", "Mul", "Add", "Sub", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Concat", "Cast",
              "Gather", "Slice", "Identity"}
_MAX_ELEMENTS = 1 << 22


class StridedGathersPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        candidates = [node for node in model.graph if _flat_gather(node)]
        if not candidates:
            return ir.passes.PassResult(model, False)
        views, opset = shapes_at_two_sizes(model), opset_of(model)
        modified = False
        for node in candidates:
            source = node.inputs[0].producer().inputs[0]
            if node.outputs[0].is_graph_output():
                continue
            if all(_reads_in_order(node.inputs[1], source, view, opset) for view in views):
                node.outputs[0].replace_all_uses_with(source)
                modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _flat_gather(node: ir.Node) -> bool:
    """Gather(Reshape(x, [-1]), computed indices) on axis 0."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or node.attributes.get_int("axis", 0) != 0:
        return False
    data, indices = node.inputs[0], node.inputs[1]
    reshape = data.producer() if data is not None else None
    if reshape is None or reshape.op_type != "Reshape" or indices is None or indices.const_value is not None:
        return False
    shape = reshape.inputs[1].const_value if reshape.inputs[1] is not None else None
    return shape is not None and shape.numpy().tolist() == [-1]


def _reads_in_order(indices: ir.Value, source: ir.Value, view: dict[str, list[int]], opset: int) -> bool:
    """Whether ``indices``, evaluated at the stand-in sizes of ``view``, are 0..n-1 in ``source``'s shape."""
    shape = view.get(source.name)
    if shape is None or prod(shape) > _MAX_ELEMENTS:
        return False
    values = _evaluate(indices, view, opset, {})
    return values is not None and list(values.shape) == shape and np.array_equal(values.ravel(), np.arange(prod(shape)))


def _evaluate(value: ir.Value, view: dict, opset: int, memo: dict) -> np.ndarray | None:
    if value.name in memo:
        return memo[value.name]
    result = None
    node = value.producer()
    if value.const_value is not None:
        result = value.const_value.numpy()
    elif node is not None and node.op_type == "Shape" and node.inputs[0].name in view:
        dims = view[node.inputs[0].name]
        result = np.array(dims, np.int64)[node.attributes.get_int("start", 0): node.attributes.get_int("end", len(dims))]
    elif node is not None and node.op_type in _INDEX_OPS and node.domain in ("", "ai.onnx"):
        inputs = [None if v is None else _evaluate(v, view, opset, memo) for v in node.inputs]
        if all(a is not None for a, v in zip(inputs, node.inputs) if v is not None):
            result = _run(node, inputs, opset)
    memo[value.name] = result
    return result


def _run(node: ir.Node, inputs: list, opset: int) -> np.ndarray | None:
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    attributes = {name: attr.value for name, attr in node.attributes.items()}
    proto = helper.make_model(
        helper.make_graph([helper.make_node(node.op_type, names, ["out"], **attributes)], "index", [],
                          [helper.make_tensor_value_info("out", 0, None)],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, inputs) if n]),
        opset_imports=[helper.make_opsetid("", opset)])
    try:
        out = np.asarray(ReferenceEvaluator(proto).run(None, {})[0])
    except Exception:  # noqa: BLE001  (an op the reference cannot run leaves the Gather as it is)
        return None
    return out if out.size <= _MAX_ELEMENTS else None
