"""What ``quantize`` did, as one plain object: the CLI, the API and report.json read the same figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir


# what a scope (ptq.SCOPES) quantizes, in words: the summary, the report and the search's notes
SCOPE_TEXT = {"all": "every op quantized", "weighted": "only Conv, Gemm and MatMul quantized"}
# why the float model was written, in words (QuantizeResult.float_reason)
FLOAT_REASON_TEXT = {"speed": "int8 did not pay", "accuracy": "int8 lost more than the accuracy budget"}


@dataclass
class QuantizeResult:
    model: ir.Model = field(repr=False)  # the int8 model, or the float model when int8 did not pay
    int8: bool  # whether ``model`` is quantized
    target: dict  # device, activation type and why
    calibration: dict  # method, samples, per-channel, format
    prepared: dict  # opset before/after, BatchNorms folded
    quantized_nodes: int  # compute nodes running in int8
    compute_nodes: int  # compute nodes of the float model
    float_nodes: dict[str, str] = field(default_factory=dict)  # node -> why it stayed float (speed / accuracy)
    speedups: dict[str, float] = field(default_factory=dict)  # batch size -> float p50 / int8 p50
    quality: dict | None = None  # metric, float, int8, drop (None without evaluation)
    max_accuracy_drop: float | None = None
    size_bytes: dict = field(default_factory=dict)  # {"float": .., "int8": ..} initializer bytes
    trials: dict = field(default_factory=dict, repr=False)  # {"speed": [...], "accuracy": [...]}: every candidate tried
    notes: list[str] = field(default_factory=list)
    gate: dict | None = None  # --min-int8-speedup: {"min": x, "passed": bool}
    qat: dict | None = None  # quantization-aware distillation: {"ptq": quality, "qat": quality, "kept": bool, ...}
    padded_inputs: list[str] = field(default_factory=list)  # convolutions with inputs padded for the fast kernel
    scope: str | None = None  # what the int8 model quantizes: "all" ops or only the "weighted" ones (ptq.SCOPES)
    float_reason: str | None = None  # why the float model was written: "speed" or "accuracy"; None for int8

    def to_dict(self) -> dict:
        return {
            "int8": self.int8, "target": self.target, "calibration": self.calibration, "prepared": self.prepared,
            "quantized_nodes": self.quantized_nodes, "compute_nodes": self.compute_nodes,
            "float_nodes": self.float_nodes, "speedups": self.speedups, "quality": self.quality,
            "max_accuracy_drop": self.max_accuracy_drop, "size_bytes": self.size_bytes, "trials": self.trials,
            "notes": self.notes, "gate": self.gate, "qat": self.qat,
            "padded_inputs": self.padded_inputs, "scope": self.scope, "float_reason": self.float_reason,
        }


def written_text(summary: dict) -> str:
    """What was written, for a person: "int8", or "float: " and why (``to_dict()``'s figures)."""
    if summary["int8"]:
        return "int8"
    return f"float: {FLOAT_REASON_TEXT[summary.get('float_reason') or 'speed']}"
