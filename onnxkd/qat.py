"""Quantization-aware distillation (QAD): the int8 model learns from the float teacher, with every quantization
step onnxruntime will compute in place.

``onnxkd.quantize`` calls the refiner made here on the int8 model that passed its speed rule:
QDQ graph -> trainable graph (``quantize/trainable.py``: float weights fake-quantized by the bridge, scales learned
as log-scales or frozen) -> ``onnxkd.distill`` from the float teacher (KD loss, labels when there are some, hints
at matching tensor names) -> QDQ graph with the trained weights, biases and scales. It sits beside pipeline.py:
the quantize layer must not import the distillation engine, so the orchestration lives above both.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxkd.data import Dataset
from onnxkd.model import ModelLike

# Fine-tuning from PTQ weights: under distillation's default (1e-3), as QAT recipes do (the weights are
# already trained; large steps undo what calibration found). Measured in the README's int8 section.
QAT_LR = 3e-4


def qad_refiner(teacher: ModelLike, *, learn_scales: bool = True, epochs: int | None = None,
                steps: int | None = None, lr: float = QAT_LR, batch_size: int = 64, device: str = "auto",
                seed: int = 0, progress: Any = None, **distill_options: Any) -> Callable[[ir.Model, Dataset], ir.Model]:
    """``refine(int8_model, training_samples) -> int8_model`` for ``onnxkd.quantize(refine=...)``."""
    from onnxkd.distill.api import resolve_device

    resolve_device(device)  # refused now, not after calibration and timing when QAD starts

    def refine(int8_model: ir.Model, samples: Dataset) -> ir.Model:
        from onnxkd.distill.api import distill
        from onnxkd.quantize.trainable import to_qdq, to_trainable

        trainable, record = to_trainable(ir.to_proto(int8_model), learn_scales)
        with tempfile.TemporaryDirectory(prefix="onnxkd-qat-") as work:
            result = distill(teacher, ir.from_proto(trainable), samples, Path(work) / "qat.onnx", epochs=epochs,
                             steps=steps, lr=lr, batch_size=batch_size, device=device, seed=seed, progress=progress,
                             **distill_options)
        refine.history = result.history
        return ir.from_proto(to_qdq(ir.to_proto(result.model), record))

    refine.history = []
    return refine
