"""Mish written out, x * tanh(softplus(x)) -> Mish (opset 18).

onnxruntime 1.2x has no Mish kernel and expands the op back, so this is a smaller graph, not a faster
one there; runtimes with the kernel gain.
"""

from __future__ import annotations

from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import Fusion


class MishWritten(pattern.RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Mul(x, op.Tanh(op.Softplus(x)))

    def rewrite(self, op, x):
        return op.Mish(x)


MISH = Fusion("Mish", min_opset=18, rules=lambda: pattern.RewriteRuleSet([MishWritten.rule()], commute=True),
              anchors=frozenset({"Softplus"}))
