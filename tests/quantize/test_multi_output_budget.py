"""The accuracy budget holds for every output: a second head int8 ruins is not hidden by the first's agreement."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import onnxkd
from onnxkd.quantize.accuracy import compare
from onnxkd.validate.latency import LatencyProtocol

FAST = LatencyProtocol(warmup=1, runs=5, budget_s=0.2)


class TwoHeads(nn.Module):
    """Class scores, and a regression head computed through one channel x2000 (the next conv scales it back: the
    same function), which one 8-bit range over that tensor crushes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 16, 3, padding=1)
        self.classes = nn.Linear(16, 10)
        self.wide = nn.Conv2d(16, 16, 3, padding=1)
        self.back = nn.Conv2d(16, 16, 1)
        self.box = nn.Linear(16, 1)
        with torch.no_grad():
            self.wide.weight[0] *= 2000
            self.wide.bias[0] *= 2000
            self.back.weight[:, 0] /= 2000

    def forward(self, x):
        f = torch.relu(self.features(x))
        g = torch.relu(self.back(torch.relu(self.wide(f))))
        return self.classes(f.mean((2, 3))), self.box(g.mean((2, 3)))


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("two-heads") / "two_heads.onnx"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoHeads().eval(), (torch.zeros(2, 3, 16, 16),), str(path), dynamo=False,
                          input_names=["x"], output_names=["scores", "box"],
                          dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}, "box": {0: "n"}})
    return path, np.random.default_rng(0).standard_normal((200, 3, 16, 16)).astype(np.float32)


def _relative_errors(float_path: Path, int8_model, x: np.ndarray, folder: Path) -> dict[str, float]:
    onnxkd.save(int8_model, folder / "int8.onnx")
    ours = ort.InferenceSession(str(folder / "int8.onnx"), providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in theirs.get_outputs()]
    return {name: float(np.linalg.norm(a - b) / np.linalg.norm(a))
            for name, a, b in zip(names, theirs.run(None, {"x": x}), ours.run(None, {"x": x}))}


def test_the_worst_output_counts_against_the_budget(two_heads, tmp_path):
    path, x = two_heads
    result = onnxkd.quantize(path, x, protocol=FAST, times_of=lambda candidate: {},
                             speedups_of=lambda *args, **kw: (lambda candidate: {b: 2.0 for b in args[1]}))
    assert result.int8 and any(why.startswith("accuracy") for why in result.float_nodes.values())
    # only the opsets its nodes use (onnxruntime's pre-processing declared ai.onnx.training, org.pytorch.aten, ...)
    assert set(result.model.opset_imports) == {node.domain for node in result.model.graph}
    measured = _relative_errors(path, result.model, x, tmp_path)  # onnxruntime on every sample, not the code's figure
    assert measured["box"] <= 0.01, measured
    quality = result.quality
    assert {o["output"] for o in quality["outputs"]} == {"scores", "box"}
    assert quality["drop"] == max(o["drop"] for o in quality["outputs"]) <= 0.01


def test_compare_takes_the_worst_output_not_the_class_scores_or_the_mean():
    scores = np.eye(10, dtype=np.float32)[np.arange(100) % 10]
    box = np.linspace(1, 2, 100, dtype=np.float32)[:, None]
    worst = compare([scores, box, box], [scores, box * 1.2, box], None, names=["scores", "box", "same"])
    assert (worst.metric, worst.output) == ("relative error", "box") and worst.drop == pytest.approx(0.2, rel=1e-6)
    assert [o["drop"] for o in worst.outputs] == [0.0, pytest.approx(0.2, rel=1e-6), 0.0]
    assert worst.describe() == "relative error of box"
    single = compare([scores], [scores], None)
    assert single.to_dict() == {"metric": "agreement", "float": None, "int8": 1.0, "drop": 0.0}
