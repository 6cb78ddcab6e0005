"""int8 on a YOLO-family detector, whose one output holds box coordinates in pixels next to class probabilities.
One 8-bit range cannot hold both: quantized as onnxruntime does by default, every score rounds to 0 while the
output's relative error stays near 1%. onnxkd leaves the decode float and measures the output part by part.
Oracle: onnxruntime's outputs of the float and int8 models, compared here with numpy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yolo

import onnxkd
from onnxkd.graph_passes.analyze.output_parts import output_parts
from onnxkd.model import load
from onnxkd.quantize.accuracy import compare
from onnxkd.validate.latency import LatencyProtocol

FAST = LatencyProtocol(warmup=1, runs=5, budget_s=0.2)


def _run(path, x) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


@pytest.fixture(scope="module")
def calibration():
    return {"images": yolo.images(96, seed=1)}


def test_the_decode_stays_float_and_the_scores_survive(yolo_model, calibration, tmp_path, monkeypatch):
    path = yolo_model("v8", "dynamo")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    result = onnxkd.quantize(path, calibration, protocol=FAST, eval_samples=48, calibration_samples=48,
                             speedups_of=lambda *a, **k: lambda candidate: {1: 2.0, 8: 2.0}, times_of=lambda p: {})
    # onnxruntime's symbolic shape inference, incomplete on the anchor grid, writes its partial model into the
    # current folder: the user's, unless onnxkd runs it elsewhere
    assert list((tmp_path / "run").iterdir()) == []
    assert result.int8 and any("decoding output(s) output0" in note for note in result.notes)
    int8 = onnxkd.save(result.model, tmp_path / "int8.onnx")
    graph = onnx.load(str(int8)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    last = next(n for n in graph.node if "output0" in n.output)
    assert not set(last.input) & dequantized  # the boxes and scores are put together in float
    x = yolo.images(16, seed=2)
    reference, got = _run(path, x), _run(int8, x)
    scores, boxes = (slice(None), slice(4, 7)), (slice(None), slice(0, 4))
    assert np.abs(got[scores] - reference[scores]).max() < 0.05
    assert np.abs(got[boxes] - reference[boxes]).mean() < 1.0  # pixels
    assert result.quality["drop"] < 0.01


def test_the_peers_int8_is_measured_part_by_part(yolo_model, calibration, tmp_path):
    """onnxruntime's quantize_static with its defaults quantizes the final Concat: the scores collapse. As one
    tensor the damage is a relative error under the 1% budget; part by part it is the whole score range."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    path = yolo_model("v8", "legacy")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"images": calibration["images"][i:i + 8]} for i in range(0, 48, 8))

        def get_next(self):
            return next(self.batches, None)

    peer = tmp_path / "peer.onnx"
    quantize_static(str(path), str(peer), Reader())
    x = yolo.images(16, seed=2)
    reference, got = _run(path, x), _run(peer, x)
    assert np.ptp(got[:, 4:]) < 0.01 < np.ptp(reference[:, 4:])  # one value left for every score
    whole = compare([reference], [got], None)
    by_parts = compare([reference], [got], None, parts=[output_parts(load(path))["output0"]])
    scores_error = np.linalg.norm(got[:, 4:] - reference[:, 4:]) / np.linalg.norm(reference[:, 4:])
    assert whole.drop < 0.05 and by_parts.drop == pytest.approx(scores_error, rel=1e-6) and by_parts.drop > 0.5
