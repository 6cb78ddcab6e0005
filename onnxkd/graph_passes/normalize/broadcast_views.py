"""Materialised broadcasts go back to being broadcasts, and Reshape chains that return to their input's shape go.

nn.MultiheadAttention's key_padding_mask, as torch exports it: the mask [B, 1, 1, S] is Expand-ed over the
heads to [B, H, 1, S], reshaped to [B*H, 1, S] and back to [B, H, 1, S], then added to the scores
[B, H, S, S]. The heads axis of that operand is computed from a constant H, not sliced from a weight, so the
analysis could not cut heads and froze every attention block. Both rewrites are exact:

- a chain of Reshapes whose output has its input's shape is the identity (Reshape keeps row-major order);
- an elementwise op broadcasts its operands itself: an operand Expand(x) can be x where the op's output shape
  stays the same.

Shapes with dynamic dims are compared at two different sets of stand-in sizes, so that an equality that holds
only at one input size never counts. Nothing is rewritten where a shape is unknown.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxkd.graph_passes.analyze.concrete_shapes import shapes_at_two_sizes

# Ops whose inputs broadcast with numpy's rule (all of them, for Where).
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "And", "Or", "Xor", "Equal", "Less",
                 "LessOrEqual", "Greater", "GreaterOrEqual", "Mod"}


class BroadcastViewsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        reshapes = [n for n in model.graph if _is(n, "Reshape") and _is(n.inputs[0].producer(), "Reshape")]
        if not reshapes and not _broadcast_operands(model):
            return ir.passes.PassResult(model, False)
        views = shapes_at_two_sizes(model)
        modified = False
        for node in reshapes:
            source = _identity_source(node, views)
            if source is not None and not node.outputs[0].is_graph_output():
                node.outputs[0].replace_all_uses_with(source)
                modified = True
        for node, i in _broadcast_operands(model):
            expand = node.inputs[i].producer()
            if _same_output_without(node, i, expand.inputs[0], views):
                node.replace_input_with(i, expand.inputs[0])
                modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _is(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def _is_broadcasting(node: ir.Node) -> bool:
    return node.op_type in _BROADCASTING and node.domain in ("", "ai.onnx")


def _broadcast_operands(model: ir.Model) -> list[tuple[ir.Node, int]]:
    """(node, input index) of every Expand output read by a broadcasting op, after the Reshape chains went."""
    return [(n, i) for n in model.graph if _is_broadcasting(n)
            for i, v in enumerate(n.inputs) if v is not None and _is(v.producer(), "Expand")]


def _identity_source(node: ir.Node, views: list[dict]) -> ir.Value | None:
    """The input of the Reshape chain ending at ``node`` that has ``node``'s output shape, if any."""
    out = node.outputs[0].name
    value = node.inputs[0]
    while _is(value.producer(), "Reshape") and len(value.uses()) == 1:
        value = value.producer().inputs[0]
        if all(view.get(value.name) is not None and view.get(value.name) == view.get(out) for view in views):
            return value
    return None


def _same_output_without(node: ir.Node, index: int, operand: ir.Value, views: list[dict]) -> bool:
    """Whether ``node`` gives the same output shape with ``operand`` in place of its input ``index``."""
    for view in views:
        shapes = [view.get(v.name) if v is not None else None for v in node.inputs]
        shapes[index] = view.get(operand.name)
        if any(s is None for s in shapes) or view.get(node.outputs[0].name) is None:
            return False
        try:
            shape = np.broadcast_shapes(*map(tuple, shapes))
        except ValueError:
            return False
        if list(shape) != view[node.outputs[0].name]:
            return False
    return True
