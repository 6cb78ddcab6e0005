"""GELU written out (erf form, and the tanh approximation) -> Gelu (opset 20).

onnxruntime fuses both forms itself at its default optimisation level, so on onnxruntime this buys a
smaller graph and faster session start, not faster runs; other runtimes (and onnxruntime at lower
levels) see the single op.

The rules expect constants as the second operand of Add and Mul (``Fusion.apply`` puts them there)
and spell out the orders of the other operands, instead of ``commute=True``: a transformer has
hundreds of Mul nodes and commuting these patterns made ~700 variants to try at each.
"""

from __future__ import annotations

import math

from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import Fusion, floating, no_broadcast, scalar_close

# Where the halving sits: torch writes (x * gate) * 0.5, HF's Python GELUs write (0.5 * x) * gate or
# x * 0.5 * gate, others x * (gate * 0.5) or (x * gate) / 2. "x" and "gate" have the gate second or first.
HALVINGS = ("product", "product_div", "x", "gate", "x_swapped", "gate_swapped")


def _either(make, a, b):
    """make(a, b) or make(b, a), for two computed operands (a and b are builders: a pattern node is not shared)."""
    return pattern.OrValue([make(a(), b()), make(b(), a())])


def _halved(op, x, gate, half, halving: str):
    """x * gate * 1/2, with the halving at ``halving``; ``gate`` builds the other factor's pattern."""
    if halving == "product":
        return op.Mul(_either(op.Mul, lambda: x, gate), half)
    if halving == "product_div":
        return op.Div(_either(op.Mul, lambda: x, gate), half)
    if halving == "x":
        return op.Mul(op.Mul(x, half), gate())
    if halving == "x_swapped":
        return op.Mul(gate(), op.Mul(x, half))
    if halving == "gate":
        return op.Mul(x, op.Mul(gate(), half))
    return op.Mul(op.Mul(gate(), half), x)


def _half_ok(half, halving: str) -> bool:
    return scalar_close(half, 2.0) if halving == "product_div" else scalar_close(half, 0.5)


class GeluErf(pattern.RewriteRuleClassBase):
    """x * (erf(x / sqrt(2)) + 1) / 2, or erf(x * (1/sqrt(2)))."""

    def __init__(self, halving: str):
        super().__init__(f"GeluErf_{halving}")
        self.halving = halving

    def pattern(self, op, x, root, one, half):
        def gate():
            scaled = pattern.OrValue([op.Div(x, root), op.Mul(x, root)], tag_var="scale_op", tag_values=("Div", "Mul"))
            return op.Add(op.Erf(scaled), one)

        return _halved(op, x, gate, half, self.halving)

    def check(self, op, x, root, one, half, scale_op, **_):
        root_ok = scalar_close(root, math.sqrt(2) if scale_op == "Div" else 1 / math.sqrt(2))
        return (floating(root, one, half) and no_broadcast(x, root, one, half) and root_ok and scalar_close(one, 1.0)
                and _half_ok(half, self.halving))

    def rewrite(self, op, x, **_):
        return op.Gelu(x)


class GeluTanh(pattern.RewriteRuleClassBase):
    """x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) / 2, the cube as Pow(x, 3) or x * x * x (torch's)."""

    def __init__(self, halving: str):
        super().__init__(f"GeluTanh_{halving}")
        self.halving = halving

    def pattern(self, op, x, three, coeff, root, one, half):
        def gate():
            cube = pattern.OrValue([op.Pow(x, three), op.Mul(x, op.Mul(x, x)), op.Mul(op.Mul(x, x), x)],
                                   tag_var="cube_op", tag_values=("Pow", "Mul", "Mul"))
            inner = _either(op.Add, lambda: x, lambda: op.Mul(cube, coeff))
            return op.Add(op.Tanh(op.Mul(inner, root)), one)

        return _halved(op, x, gate, half, self.halving)

    def check(self, op, x, three, coeff, root, one, half, cube_op, **_):
        if not (floating(coeff, root, one, half) and no_broadcast(x, coeff, root, one, half)):
            return False
        if cube_op == "Pow" and not no_broadcast(x, three):  # Pow's exponent may be an integer
            return False
        return ((cube_op == "Mul" or scalar_close(three, 3.0)) and scalar_close(coeff, 0.044715)
                and scalar_close(root, math.sqrt(2 / math.pi)) and scalar_close(one, 1.0) and _half_ok(half, self.halving))

    def rewrite(self, op, x, **_):
        return op.Gelu(x, approximate="tanh")


def _rules() -> pattern.RewriteRuleSet:
    return pattern.RewriteRuleSet([rule.rule(halving) for rule in (GeluErf, GeluTanh) for halving in HALVINGS])


GELU = Fusion("Gelu", min_opset=20, rules=_rules, anchors=frozenset({"Erf", "Tanh"}))
