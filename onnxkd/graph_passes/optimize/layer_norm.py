"""LayerNormalization written as a ReduceMean chain -> one op (opset 17).

Exports below opset 17 (torch's, tf2onnx's) spell it out as mean, deviation, variance, sqrt and an
affine. onnxruntime fuses the chain itself at its default level; the single op makes the graph small
and lets other runtimes use their kernel. Only the last axis is matched, with the affine's scale and
bias as constants of the normalised size, as the op requires.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import Fusion, floating, no_broadcast, reduced_axes, scalar, scalar_close


def _reduces_last_axis(mean: ir.Value, rank: int | None) -> bool:
    """``rank``: the normalised input's (the variance's input, x - mean squared, often has no shape recorded)."""
    node = mean.producer()
    if node is None or node.attributes.get_int("keepdims", 1) != 1:
        return False
    axes = reduced_axes(node)
    return axes is not None and len(axes) == 1 and (axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


class LayerNormWritten(pattern.RewriteRuleClassBase):
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * scale + bias, over the last axis."""

    def pattern(self, op, x, two, eps, scale, bias):
        mean = op.ReduceMean(x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["mean"])
        deviation = op.Sub(x, mean)
        variance = op.ReduceMean(op.Pow(deviation, two), _allow_other_inputs=True, _allow_other_attributes=True,
                                 _outputs=["variance"])
        normalised = op.Div(deviation, op.Sqrt(op.Add(variance, eps)))
        return op.Add(op.Mul(normalised, scale), bias)

    def check(self, op, x, two, eps, scale, bias, mean, variance, **_):
        rank = x.shape.rank() if x.shape is not None else None
        if not (floating(eps, scale) and no_broadcast(x, two, eps) and scalar_close(two, 2.0)
                and scalar(eps) is not None and _reduces_last_axis(mean, rank) and _reduces_last_axis(variance, rank)):
            return False
        width = x.shape[-1] if x.shape is not None and x.shape.rank() else None
        for weight in (scale, bias):
            tensor = ir.convenience.get_const_tensor(weight)
            if tensor is None or not isinstance(width, int) or tuple(tensor.shape) not in ((width,),):
                return False
            if tensor.dtype != x.dtype:
                return False
        return True

    def rewrite(self, op, x, eps, scale, bias, **_):
        return op.LayerNormalization(x, scale, bias, axis=-1, epsilon=float(np.float32(scalar(eps))))


LAYER_NORM = Fusion("LayerNormalization", min_opset=17,
                    rules=lambda: pattern.RewriteRuleSet([LayerNormWritten.rule()], commute=True),
                    anchors=frozenset({"ReduceMean"}))
