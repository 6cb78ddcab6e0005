"""HardSigmoid and HardSwish written out as Add/Clip/Div (or Mul by 1/6) -> one op.

MobileNetV3-style exports (TensorFlow, PaddlePaddle, torch code that writes ``x * relu6(x + 3) / 6``)
spell these out. onnxruntime has no fusion for the written form; the single op is a fast kernel, and
HardSigmoid then fuses into the Conv before it. Also Keras' ``clip(a * x + b, 0, 1)``.

The rules run in stages: rules are tried node by node, so within one rule set the Div of
``x * (clip(x + 3, 0, 6) / 6)`` would become a HardSigmoid before its Mul is reached, and the
HardSwish would be counted twice.
"""

from __future__ import annotations

from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import Fusion, floating, no_broadcast, scalar, scalar_close


def _relu6_of_x_plus_3(op, x, bias, low, high):
    return op.Clip(op.Add(x, bias), low, high)


def _sixth(op, value, six, by_mul: bool):
    return op.Mul(value, six) if by_mul else op.Div(value, six)


def _checks(x, bias, low, high, six, by_mul: bool) -> bool:
    return (floating(bias, low, high, six) and no_broadcast(x, bias, low, high, six)
            and scalar_close(bias, 3.0) and scalar_close(low, 0.0) and scalar_close(high, 6.0)
            and scalar_close(six, 1 / 6 if by_mul else 6.0))


class HardSwishWritten(pattern.RewriteRuleClassBase):
    """x * clip(x + 3, 0, 6) / 6, or * (1/6)"""

    def __init__(self, by_mul: bool):
        super().__init__(f"HardSwish{'TimesSixth' if by_mul else 'Div'}")
        self.by_mul = by_mul

    def pattern(self, op, x, bias, low, high, six):
        return _sixth(op, op.Mul(x, _relu6_of_x_plus_3(op, x, bias, low, high)), six, self.by_mul)

    def check(self, op, x, bias, low, high, six, **_):
        return _checks(x, bias, low, high, six, self.by_mul)

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class HardSwishGateFirst(pattern.RewriteRuleClassBase):
    """x * (clip(x + 3, 0, 6) / 6), or * (1/6)"""

    def __init__(self, by_mul: bool):
        super().__init__(f"HardSwishGateFirst{'TimesSixth' if by_mul else 'Div'}")
        self.by_mul = by_mul

    def pattern(self, op, x, bias, low, high, six):
        return op.Mul(x, _sixth(op, _relu6_of_x_plus_3(op, x, bias, low, high), six, self.by_mul))

    def check(self, op, x, bias, low, high, six, **_):
        return _checks(x, bias, low, high, six, self.by_mul)

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class HardSwishFromHardSigmoid(pattern.RewriteRuleClassBase):
    """x * HardSigmoid(x) with HardSwish's alpha 1/6 and beta 1/2 (a model's own op, or one fused here)."""

    def pattern(self, op, x):
        return op.Mul(x, op.HardSigmoid(x, _allow_other_attributes=True, _outputs=["gate"]))

    def check(self, op, x, gate, **_):
        attributes = gate.producer().attributes
        return (abs(attributes.get_float("alpha", 0.2) - 1 / 6) < 1e-6
                and abs(attributes.get_float("beta", 0.5) - 0.5) < 1e-6)

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class HardSigmoidWritten(pattern.RewriteRuleClassBase):
    """clip(x + 3, 0, 6) / 6, or * (1/6)"""

    def __init__(self, by_mul: bool):
        super().__init__(f"HardSigmoid{'TimesSixth' if by_mul else 'Div'}")
        self.by_mul = by_mul

    def pattern(self, op, x, bias, low, high, six):
        return _sixth(op, _relu6_of_x_plus_3(op, x, bias, low, high), six, self.by_mul)

    def check(self, op, x, bias, low, high, six, **_):
        return _checks(x, bias, low, high, six, self.by_mul)

    def rewrite(self, op, x, **_):
        return op.HardSigmoid(x, alpha=1 / 6, beta=0.5)


class AffineClipToHardSigmoid(pattern.RewriteRuleClassBase):
    """clip(alpha * x + beta, 0, 1): Keras' hard_sigmoid (alpha 0.2) and others."""

    def pattern(self, op, x, alpha, beta, low, high):
        return op.Clip(op.Add(op.Mul(x, alpha), beta), low, high)

    def check(self, op, x, alpha, beta, low, high, **_):
        return (floating(alpha, beta, low, high) and no_broadcast(x, alpha, beta, low, high)
                and scalar(alpha) is not None and scalar(beta) is not None
                and scalar_close(low, 0.0) and scalar_close(high, 1.0))

    def rewrite(self, op, x, alpha, beta, **_):
        return op.HardSigmoid(x, alpha=scalar(alpha), beta=scalar(beta))


def _rules() -> tuple[pattern.RewriteRuleSet, ...]:
    # commute=True for Mul(x, clip) and x * (...): both operands computed (constants are put second already)
    hard_swish = [rule.rule(by_mul) for rule in (HardSwishWritten, HardSwishGateFirst) for by_mul in (False, True)]
    hard_sigmoid = [HardSigmoidWritten.rule(False), HardSigmoidWritten.rule(True), AffineClipToHardSigmoid.rule()]
    return (pattern.RewriteRuleSet(hard_swish + [HardSwishFromHardSigmoid.rule()], commute=True),
            pattern.RewriteRuleSet(hard_sigmoid, commute=True),
            pattern.RewriteRuleSet([HardSwishFromHardSigmoid.rule()], commute=True))


HARD_ACTIVATIONS = Fusion("HardSigmoid/HardSwish", min_opset=14, rules=_rules, anchors=frozenset({"Clip", "HardSigmoid"}))
