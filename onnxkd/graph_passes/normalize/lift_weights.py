"""Turn the Constant nodes that hold weights into initializers.

onnx_ir's LiftConstantsToInitializersPass lifts constants of 16 elements or more; a smaller constant is
lifted too when it sits in a weight slot (a 10-class Gemm bias), because downstream stages find weights
among initializers only. Small constants elsewhere (scalars of Gelu, Resize scales) stay nodes: as
initializers the torch bridge would make them trainable.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

# op type -> input positions that hold learned tensors
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2, 3, 4),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "PRelu": (1,),
    "Gather": (0,),
}


def feeds_weight_slot(value: ir.Value) -> bool:
    return any(
        user.domain in ("", "ai.onnx") and index in WEIGHT_INPUTS.get(user.op_type, ())
        for user, index in value.uses()
    )


class LiftWeightConstantsPass(ir.passes.InPlacePass):
    """Lift Constant nodes (``value`` attribute) that are large or feed a weight slot; count them."""

    def __init__(self, size_limit: int = 16):
        super().__init__()
        self.size_limit = size_limit
        self.lifted = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _constant_count(model)
        LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=self.size_limit)(model)
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and _is_small_weight(node):
                _lift(node)
        self.lifted = before - _constant_count(model)
        return ir.passes.PassResult(model, modified=self.lifted > 0)


def _is_small_weight(node: ir.Node) -> bool:
    output = node.outputs[0]
    return (
        list(node.attributes) == ["value"]
        and not output.is_graph_output()
        and feeds_weight_slot(output)
    )


def _lift(node: ir.Node) -> None:
    output = node.outputs[0]
    tensor = node.attributes["value"].as_tensor()
    initializer = ir.Value(
        name=output.name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    initializer.meta.update(output.meta)
    graph = node.graph
    assert graph is not None
    graph.register_initializer(initializer)
    output.replace_all_uses_with(initializer)
    graph.remove(node, safe=True)


def _constant_count(model: ir.Model) -> int:
    return sum(
        1
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
    )
