"""Pass/fail thresholds for pipelines: exit code 1 when one fails."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxkd.errors import OnnxkdError


class GateFailed(OnnxkdError):
    """Raised by the CLI after the report is written: pipelines see exit code 1 and the failed gates."""

    exit_code = 1

    def __init__(self, failed: list[dict]):
        shown = "; ".join(f"{g['name']} {_show(g['name'], g['value'])} (needs {g['op']} {_show(g['name'], g['threshold'])})"
                          for g in failed)
        super().__init__(f"{len(failed)} gate(s) failed: {shown}")


# Fractions of samples compared with a limit: 1.0 - 0.99 is 0.010000000000000009 in floating point, so two
# flips in 200 would fail a 1% limit they meet. A billionth is far below one sample of any data set.
FRACTION_TOLERANCE = 1e-9


def within(value: float, limit: float) -> bool:
    """``value <= limit`` for fractions of samples, up to floating-point rounding."""
    return value <= limit + FRACTION_TOLERANCE


FINITE = "finite outputs"  # the gate every run with a gate gets: no NaN/Inf where the teacher has none


def _show(name: str, value: float) -> str:
    if name == FINITE:
        return f"{value:g} NaN/Inf values"
    return f"{value:.2f}x" if "speed" in name else f"{value * 100:.2f}%"


@dataclass(frozen=True)
class Gates:
    max_accuracy_drop: float | None = None  # teacher accuracy - student accuracy, as a fraction (0.01 = 1 point)
    min_agreement: float | None = None  # top-1 agreement (of samples, else per token, else of detections), fraction
    min_speedup: float | None = None  # teacher p50 / student p50 at batch 1

    def __post_init__(self):
        """The CLI's ranges, for Python callers too: a string or an out-of-range gate failed after the whole run
        (a TypeError), or passed or failed whatever the model did."""
        for name, high in (("max_accuracy_drop", 1.0), ("min_agreement", 1.0), ("min_speedup", math.inf)):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OnnxkdError(f"{flag} {value!r}: expected a number, got {type(value).__name__}")
            if not 0 <= value <= high:  # NaN fails too
                raise OnnxkdError(f"{flag} {value}: must be in [0, {high:g}]" if high < math.inf else
                                  f"{flag} {value}: must be >= 0")

    def check_measurable(self, has_data: bool, has_labels: bool, flag: str = "--data") -> None:
        """Refuse up front a gate the run could not measure, rather than fail it after minutes of timing
        (``flag``: the option that gives the data measured on)."""
        if self.max_accuracy_drop is not None and not has_labels:
            raise OnnxkdError(f"--max-accuracy-drop needs {flag} with labels")
        if self.min_agreement is not None and not has_data:
            raise OnnxkdError(f"--min-agreement needs {flag}")

    def to_dict(self) -> dict:
        return {"max_accuracy_drop": self.max_accuracy_drop, "min_agreement": self.min_agreement,
                "min_speedup": self.min_speedup}


def evaluate(gates: Gates, accuracy_drop: float | None, agreement: float | None, speedup: float | None,
             broken_values: int = 0) -> list[dict]:
    """The gates given, and where any is: ``broken_values`` (the student's NaN/Inf where the teacher's outputs are
    finite) must be 0. A student that outputs NaN is broken whatever its figures: it scores 0% (``quality.top1``),
    yet a loose drop limit against a weak teacher would pass it."""
    results = []
    checks = [
        ("accuracy drop", "<=", gates.max_accuracy_drop, accuracy_drop),
        ("top-1 agreement", ">=", gates.min_agreement, agreement),
        ("speed-up p50", ">=", gates.min_speedup, speedup),
    ]
    for name, op, threshold, value in checks:
        if threshold is None:
            continue
        if value is None:  # e.g. no class-score output to compute agreement from
            raise OnnxkdError(f"gate {name}: the model's outputs do not allow measuring it (no [N, C] class scores, "
                              "nor [N, T, C] scores per token, nor YOLO detections)")
        passed = within(value, threshold) if op == "<=" else (
            value >= threshold if "speed" in name else within(threshold, value))
        results.append({"name": name, "op": op, "threshold": threshold, "value": value, "passed": bool(passed)})
    if results:
        results.append({"name": FINITE, "op": "==", "threshold": 0, "value": broken_values,
                        "passed": broken_values == 0})
    return results
