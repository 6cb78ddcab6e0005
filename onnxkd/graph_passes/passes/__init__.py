"""The normalisation passes, one per file, each an ``onnx_ir.passes`` pass (model in, PassResult out).

``onnxkd.graph_passes.normalize`` composes them with the passes onnx_ir already ships.
"""

from onnxkd.graph_passes.passes.constant_of_shape import FoldConstantOfShapePass
from onnxkd.graph_passes.passes.lift_weights import WEIGHT_INPUTS, LiftWeightConstantsPass
from onnxkd.graph_passes.passes.opset import MIN_OPSET, UpgradeOpsetPass
from onnxkd.graph_passes.passes.simplify import SimplifyPass

__all__ = [
    "MIN_OPSET",
    "WEIGHT_INPUTS",
    "FoldConstantOfShapePass",
    "LiftWeightConstantsPass",
    "SimplifyPass",
    "UpgradeOpsetPass",
]
