"""Slice bounds computed from a static size become constants.

The legacy torch exporter writes ``x.chunk(2, dim=1)`` as Slices whose bounds are computed at run time
(end = (Shape(x)[1] + 1) / 2). Left so, a pruned model would halve its pruned width, so both halves would
have to lose the same channels' count; as constants they are shape entries that the prune edits like any
other, and each half shrinks on its own (ShuffleNet v2's channel split).

Folded only where exact: the bound is arithmetic on Shape(data) and constants, and with the dynamic input dims
at two different sets of stand-in sizes the sliced axes have the same extent and the bound the same value
(neither depends on them).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxkd.graph_passes.analyze.concrete_shapes import concrete_at_two_sizes

_BOUNDS = {1: "starts", 2: "ends"}


def _computed_bounds(node: ir.Node) -> list[int]:
    """Indices of the bounds of a Slice (opset >= 10) that are computed, not constant."""
    if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 3:
        return []
    axes = node.inputs[3] if len(node.inputs) > 3 else None
    if node.inputs[0] is None or (axes is not None and axes.const_value is None):
        return []
    return [i for i in _BOUNDS if node.inputs[i] is not None and node.inputs[i].const_value is None
            and _from_own_shape(node.inputs[i], node.inputs[0])]


_ARITHMETIC = {"Gather", "Slice", "Unsqueeze", "Squeeze", "Concat", "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Min",
               "Max", "Floor", "Ceil", "Identity", "Constant"}


def _from_own_shape(bound: ir.Value, data: ir.Value, budget: int = 32) -> bool:
    """Whether ``bound`` is arithmetic on constants and Shape(data) alone (the chunk pattern); anything else
    (another tensor's size, such as a sequence length) is never folded, and costs no shape inference."""
    stack, seen = [bound], set()
    while stack:
        value = stack.pop()
        if value is None or value.const_value is not None or id(value) in seen:
            continue
        seen.add(id(value))
        node = value.producer()
        if node is None or len(seen) > budget:
            return False
        if node.op_type == "Shape":
            if node.inputs[0] is not data:
                return False
            continue
        if node.op_type not in _ARITHMETIC or node.domain not in ("", "ai.onnx"):
            return False
        stack.extend(node.inputs)
    return True


def _static_axes(node: ir.Node, first: dict, second: dict) -> bool:
    """Whether every sliced axis has the same extent at both sets of stand-in sizes."""
    name = node.inputs[0].name
    a, b = first.get(name), second.get(name)
    if a is None or b is None:
        return False
    axes = node.inputs[3].const_value.numpy().tolist() if len(node.inputs) > 3 and node.inputs[3] is not None \
        else range(len(a))
    return all(a[k] == b[k] for k in axes)


class FoldStaticSliceBoundsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        todo = [(node, i) for node in model.graph for i in _computed_bounds(node)]
        if not todo:
            return ir.passes.PassResult(model, False)
        (shapes, first), (other_shapes, second) = concrete_at_two_sizes(model)
        modified = False
        for node, i in todo:
            name = node.inputs[i].name
            a, b = first.get(name), second.get(name)
            if a is None or b is None or not np.array_equal(a, b) or not _static_axes(node, shapes, other_shapes):
                continue
            constant = ir.Value(name=f"{node.name or node.outputs[0].name}__{_BOUNDS[i]}",
                                const_value=ir.tensor(np.asarray(a, dtype=np.int64)))
            model.graph.register_initializer(constant)
            node.replace_input_with(i, constant)
            modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)
