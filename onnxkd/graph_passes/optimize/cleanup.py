"""What a deployed graph should not carry: foldable constants, Identity chains, dead nodes and weights.

Pruned students and many exports keep initializers nothing reads any more (onnxruntime warns about
each one) and Identity nodes left by exporters.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass, RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

from onnxkd.graph_passes.normalize.simplify import quiet_logger


def clean_up(model: ir.Model) -> None:
    """Fold constants and drop what no graph output depends on, in place; the interface is kept."""
    from onnxscript import optimizer  # a runtime dependency, slow to import

    with quiet_logger("onnxscript.optimizer._constant_folding"):
        optimizer.fold_constants(model, onnx_shape_inference=False)
    IdentityEliminationPass()(model)
    RemoveUnusedNodesPass()(model)
    RemoveUnusedOpsetsPass()(model)
    _shapes_of_constants(model)


def _shapes_of_constants(model: ir.Model) -> None:
    """A tensor folded into an initializer keeps the shape it was declared with as a node output ([unk__23,
    unk__22] for a folded weight Transpose), which onnx's shape inference then trusts over the data: every
    MatMul reading it came out unsized (MACs not counted). Its shape is the tensor's."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                value.shape = ir.Shape(value.const_value.shape)
                value.dtype = value.const_value.dtype

