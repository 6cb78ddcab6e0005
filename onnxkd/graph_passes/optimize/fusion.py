"""One fusion: named onnxscript rewrite rules and the lowest opset its fused op exists at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern


@dataclass(frozen=True)
class Fusion:
    name: str  # what the report calls it, e.g. "HardSwish"
    min_opset: int  # default-domain opset the fused op needs; lower models are upgraded first
    rules: Callable[[], pattern.RewriteRuleSet]

    def apply(self, model: ir.Model) -> int:
        """Rewrite every match in place; the number of matches rewritten."""
        return self.rules().apply_to_model(model)


def scalar_close(value: ir.Value | None, expected: float, rel_tol: float = 1e-4) -> bool:
    """``value`` is a one-element constant equal to ``expected`` (exporters write 1/6 or sqrt(2) rounded)."""
    if value is None:
        return False
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None or tensor.size != 1:
        return False
    return bool(np.isclose(float(tensor.numpy().reshape(())), expected, rtol=rel_tol, atol=1e-7))


def scalar(value: ir.Value | None) -> float | None:
    """The number a one-element constant holds, else None."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None or tensor.size != 1:
        return None
    return float(tensor.numpy().reshape(()))
