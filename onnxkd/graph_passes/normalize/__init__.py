"""The normalisation passes, one per file, each an ``onnx_ir.passes`` pass (model in, PassResult out).

``onnxkd.graph_passes.normalize.canonical`` composes them with the passes onnx_ir already ships.
"""

from onnxkd.graph_passes.normalize.constant_of_shape import FoldConstantOfShapePass
from onnxkd.graph_passes.normalize.lift_weights import WEIGHT_INPUTS, LiftWeightConstantsPass
from onnxkd.graph_passes.normalize.opset import MIN_OPSET, UpgradeOpsetPass
from onnxkd.graph_passes.normalize.simplify import SimplifyPass

__all__ = [
    "MIN_OPSET",
    "WEIGHT_INPUTS",
    "FoldConstantOfShapePass",
    "LiftWeightConstantsPass",
    "SimplifyPass",
    "UpgradeOpsetPass",
]
