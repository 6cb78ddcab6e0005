"""Figures computed by onnxruntime, the independent oracle of every distillation test."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def ort_outputs(path, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ort_accuracy(path, npz) -> float:
    data = np.load(npz)
    logits = ort_outputs(path, {"image": data["image"]})[0]
    return float((logits.argmax(1) == data["labels"]).mean())


def relative_error(student: np.ndarray, teacher: np.ndarray) -> float:
    return float(((student - teacher) ** 2).sum() / (teacher**2).sum())
