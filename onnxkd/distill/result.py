"""``DistillResult``: what a distillation run did and measured; ``to_dict()`` is its JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir


@dataclass
class DistillResult:
    model: ir.Model = field(repr=False)  # the distilled student (also written to ``output`` when given)
    output: str | None
    config: dict  # DistillConfig.to_dict()
    device: str
    world_size: int
    data: dict  # {"train": {source, n, labels}, "val": {source, n, held_out}, "data_free": bool}
    targets: list[dict]  # what was distilled: output, tensor, loss, weight
    hints: list[dict]
    teacher_cache: dict  # {"used", "where" (memory|disk|none), "mb", "seconds", "reason", "measured"}
    recalibration: dict | None  # {"samples", "before": figures, "after": figures}; None without BatchNorm
    initial: dict | None  # validation figures of the student training starts from (after recalibration)
    # one record per epoch: loss, lr, seconds, samples_per_s, data_wait, steps, val figures
    history: list[dict] = field(repr=False)
    best_epoch: int | None
    best: dict | None  # validation figures of the best epoch (the weights written)
    epochs: int
    steps: int
    wall_s: float
    samples_per_s: float  # training samples per second (all processes), excluding validation
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}
