"""The validation result: plain dataclasses that serialise to report.json (the API, CLI and report share it).

Bump SCHEMA_VERSION's major part when a field is renamed or removed, the minor part when one is added.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

SCHEMA_VERSION = "1.3"  # 1.1: the optional "compress" section (onnxkd compress); 1.2: macs_int8; 1.3: compress.val_is_train


@dataclass
class ModelFigures:
    path: str
    sha256: str
    size_bytes: int
    params: int
    macs: int
    macs_int8: int  # the part of macs whose operands are 8-bit integers (a quantized model's); 0 for a float one
    macs_by_op: dict[str, int]
    macs_unknown_nodes: list[str]
    nodes: int
    op_histogram: dict[str, int]
    inputs: list[dict]  # name, dtype, shape (model's, with symbols) and measured_shape
    outputs: list[str]
    session_create_ms: float | None = None
    first_run_ms: float | None = None
    accuracy: float | None = None  # fraction 0-1 on --data labels
    latency_ms: dict | None = None  # batch 1: p50, p90, p95, p99, mean, std, cv, n, samples, ...
    latency_ms_batched: dict | None = None  # same at --batch-size (None when the model fixes batch 1)


@dataclass
class ValidationResult:
    teacher: ModelFigures
    student: ModelFigures
    speedup: dict  # p50, ci95, mean, macs_reduction, params_reduction, batched {...}
    environment: dict
    config: dict
    agreement: dict | None = None  # top1, top1_ci95, n, output
    accuracy: dict | None = None  # teacher, student, drop, drop_ci95, n, output
    quality: list[dict] = field(default_factory=list)  # one entry per output
    channels: list[dict] = field(default_factory=list, repr=False)  # layer, op_type, teacher, student, kept
    gates: list[dict] = field(default_factory=list)  # name, op, threshold, value, passed
    warnings: list[str] = field(default_factory=list)
    data: dict | None = None  # source, n, labels
    schema_version: str = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates)

    def __repr__(self) -> str:
        """One line a notebook can show (the fields hold every latency sample: ``to_dict()`` has them all)."""
        shown = [f"passed={self.passed}", f"speedup p50 {self.speedup['p50']:.2f}x at batch {self.speedup['batch_size']}"]
        if self.speedup.get("macs_reduction"):
            shown.append(f"MACs {self.speedup['macs_reduction']:.2f}x fewer")
        if self.accuracy:
            shown.append(f"accuracy {self.accuracy['teacher']:.2%} -> {self.accuracy['student']:.2%}")
        elif self.agreement:
            shown.append(f"agreement {self.agreement['top1']:.2%}")
        return f"ValidationResult({', '.join(shown)})"

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        ordered = {"schema_version": raw.pop("schema_version"), "passed": self.passed}
        ordered.update(raw)
        return json_safe(ordered)


def json_safe(value):
    """JSON-safe: numpy scalars -> Python, NaN/Inf -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
