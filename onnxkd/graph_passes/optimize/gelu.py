"""GELU written out (erf form, and the tanh approximation) -> Gelu (opset 20).

onnxruntime fuses both forms itself at its default optimisation level, so on onnxruntime this buys a
smaller graph and faster session start, not faster runs; other runtimes (and onnxruntime at lower
levels) see the single op.
"""

from __future__ import annotations

import math

from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import Fusion, scalar_close


class GeluErf(pattern.RewriteRuleClassBase):
    """x * (erf(x / sqrt(2)) + 1) * 0.5, the halving anywhere in the product."""

    def __init__(self, halve_first: bool, scale_by_mul: bool):
        super().__init__(f"GeluErf{'Halved' if halve_first else ''}{'Mul' if scale_by_mul else 'Div'}")
        self.halve_first, self.scale_by_mul = halve_first, scale_by_mul

    def pattern(self, op, x, root, one, half):
        scaled = op.Mul(x, root) if self.scale_by_mul else op.Div(x, root)
        gate = op.Add(op.Erf(scaled), one)
        return op.Mul(x, op.Mul(gate, half)) if self.halve_first else op.Mul(op.Mul(x, gate), half)

    def check(self, op, x, root, one, half, **_):
        root_ok = scalar_close(root, 1 / math.sqrt(2)) if self.scale_by_mul else scalar_close(root, math.sqrt(2))
        return root_ok and scalar_close(one, 1.0) and scalar_close(half, 0.5)

    def rewrite(self, op, x, **_):
        return op.Gelu(x)


class GeluTanh(pattern.RewriteRuleClassBase):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), the cube as Pow(x, 3) or x * (x * x) (torch's)."""

    def __init__(self, halve_first: bool, cube_by_mul: bool):
        super().__init__(f"GeluTanh{'Halved' if halve_first else ''}{'Mul' if cube_by_mul else 'Pow'}")
        self.halve_first, self.cube_by_mul = halve_first, cube_by_mul

    def pattern(self, op, x, three, coeff, root, one, half):
        cube = op.Mul(x, op.Mul(x, x)) if self.cube_by_mul else op.Pow(x, three)
        inner = op.Mul(op.Add(x, op.Mul(cube, coeff)), root)
        gate = op.Add(op.Tanh(inner), one)
        return op.Mul(x, op.Mul(gate, half)) if self.halve_first else op.Mul(op.Mul(x, gate), half)

    def check(self, op, x, three, coeff, root, one, half, **_):
        return ((self.cube_by_mul or scalar_close(three, 3.0)) and scalar_close(coeff, 0.044715) and scalar_close(root, math.sqrt(2 / math.pi))
                and scalar_close(one, 1.0) and scalar_close(half, 0.5))

    def rewrite(self, op, x, **_):
        return op.Gelu(x, approximate="tanh")


def _rules() -> pattern.RewriteRuleSet:
    erf = [GeluErf.rule(h, m) for h in (False, True) for m in (False, True)]
    return pattern.RewriteRuleSet(erf + [GeluTanh.rule(h, c) for h in (False, True) for c in (False, True)], commute=True)


GELU = Fusion("Gelu", min_opset=20, rules=_rules)
