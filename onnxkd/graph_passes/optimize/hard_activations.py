"""HardSigmoid and HardSwish written out as Add/Clip/Div (or Mul by 1/6) -> one op.

MobileNetV3-style exports (TensorFlow, PaddlePaddle, torch code that writes ``x * relu6(x + 3) / 6``)
spell these out. onnxruntime has no fusion for the written form; the single op is a fast kernel, and
HardSigmoid then fuses into the Conv before it. onnxscript's rules cover ``/ 6``; the rules here add
``* (1/6)`` and Keras' ``clip(a * x + b, 0, 1)``.
"""

from __future__ import annotations

from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules.common import fuse_hardswish_rules

from onnxkd.graph_passes.optimize.fusion import Fusion, scalar, scalar_close


def _relu6_of_x_plus_3(x, bias, low, high) -> bool:
    return scalar_close(bias, 3.0) and scalar_close(low, 0.0) and scalar_close(high, 6.0)


class HardSwishTimesSixth(pattern.RewriteRuleClassBase):
    """x * clip(x + 3, 0, 6) * (1/6)"""

    def pattern(self, op, x, bias, low, high, sixth):
        return op.Mul(op.Mul(x, op.Clip(op.Add(x, bias), low, high)), sixth)

    def check(self, op, x, bias, low, high, sixth, **_):
        return _relu6_of_x_plus_3(x, bias, low, high) and scalar_close(sixth, 1 / 6)

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class HardSwishGateFirst(pattern.RewriteRuleClassBase):
    """x * (clip(x + 3, 0, 6) / 6), or * (1/6): one HardSwish, counted once (not a HardSigmoid, then a HardSwish)."""

    def pattern(self, op, x, bias, low, high, six):
        clip = op.Clip(op.Add(x, bias), low, high)
        return op.Mul(x, pattern.OrValue([op.Div(clip, six), op.Mul(clip, six)], tag_var="scale_op",
                                         tag_values=("Div", "Mul")))

    def check(self, op, x, bias, low, high, six, scale_op, **_):
        return _relu6_of_x_plus_3(x, bias, low, high) and scalar_close(six, 6.0 if scale_op == "Div" else 1 / 6)

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class HardSigmoidTimesSixth(pattern.RewriteRuleClassBase):
    """clip(x + 3, 0, 6) * (1/6)"""

    def pattern(self, op, x, bias, low, high, sixth):
        return op.Mul(op.Clip(op.Add(x, bias), low, high), sixth)

    def check(self, op, x, bias, low, high, sixth, **_):
        return _relu6_of_x_plus_3(x, bias, low, high) and scalar_close(sixth, 1 / 6)

    def rewrite(self, op, x, **_):
        return op.HardSigmoid(x, alpha=1 / 6, beta=0.5)


class AffineClipToHardSigmoid(pattern.RewriteRuleClassBase):
    """clip(alpha * x + beta, 0, 1): Keras' hard_sigmoid (alpha 0.2) and others."""

    def pattern(self, op, x, alpha, beta, low, high):
        return op.Clip(op.Add(op.Mul(x, alpha), beta), low, high)

    def check(self, op, x, alpha, beta, low, high, **_):
        return (scalar(alpha) is not None and scalar(beta) is not None
                and scalar_close(low, 0.0) and scalar_close(high, 1.0))

    def rewrite(self, op, x, alpha, beta, **_):
        return op.HardSigmoid(x, alpha=scalar(alpha), beta=scalar(beta))


def _rules() -> pattern.RewriteRuleSet:
    # Whole HardSwish patterns first, so their Clip/Div is not taken by a HardSigmoid rule alone
    # (Mul(x, HardSigmoid(x)) would still become HardSwish, but only with alpha 1/6 exactly).
    return pattern.RewriteRuleSet(
        [HardSwishTimesSixth.rule(), HardSwishGateFirst.rule(), *fuse_hardswish_rules().rules, HardSigmoidTimesSixth.rule(),
         AffineClipToHardSigmoid.rule()],
        commute=True,
    )


HARD_ACTIVATIONS = Fusion("HardSigmoid/HardSwish", min_opset=14, rules=_rules, anchors=frozenset({"Clip", "HardSigmoid"}))
