"""An LSTM classifier on real data (the digits read row by row, examples/sequence.py) through compress: its hidden
units are cut and distillation brings the accuracy back, measured with onnxruntime on the held-out digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxkd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import sequence  # noqa: E402


def _accuracy(model: str | Path, val: Path) -> float:
    data = np.load(val)
    scores = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"rows": data["rows"]})[0]
    return float((scores.argmax(1) == data["labels"]).mean())


def test_an_lstm_loses_hidden_units_and_distillation_brings_its_accuracy_back(tmp_path):
    paths = sequence.build(tmp_path / "sequence")
    result = onnxkd.compress(paths["teacher"], 0.5, paths["train"], val_data=paths["val"],
                             output=tmp_path / "student.onnx", report=False)
    hidden = [node.attributes["hidden_size"].value for node in result.model.graph if node.op_type == "LSTM"]
    assert hidden == [32, 32]
    r = result.to_dict()
    assert r["speedup"]["macs_reduction"] > 3.5
    # the report's layers: the hidden units (they read the input size once)
    assert [(c["teacher"], c["student"]) for c in r["channels"] if c["op_type"] == "LSTM"] == [(64, 32), (64, 32)]
    teacher, student = _accuracy(paths["teacher"], paths["val"]), _accuracy(result.student, paths["val"])
    pruned = r["compress"]["pruned_quality"]["accuracy"]["student"]
    assert teacher > 0.9 and pruned < teacher - 0.1  # the cut costs accuracy ...
    assert student >= teacher - 0.02  # ... that distillation brings back
    assert r["accuracy"]["student"] == student  # the report's figure is onnxruntime's
