"""An end-to-end detector (NonMaxSuppression in the graph) distils on the boxes and scores NonMaxSuppression
reads, per sample, instead of its outputs, whose row counts follow the data (it stopped with an internal error).
Oracle: onnxruntime on the models with those tensors made outputs."""

from __future__ import annotations

import numpy as np
import onnx
from detector import export_detector, images
from onnx import helper

import onnxkd

from ort_oracle import ort_outputs, relative_error


def _with_heads_as_outputs(path, out):
    model = onnx.load(str(path))
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in ("boxes", "scores"))
    onnx.save(model, str(out))
    return out


def _head_error(student, teacher, x, tmp_path) -> float:
    t = ort_outputs(_with_heads_as_outputs(teacher, tmp_path / "t-heads.onnx"), {"images": x})[-2:]
    s = ort_outputs(_with_heads_as_outputs(student, tmp_path / "s-heads.onnx"), {"images": x})[-2:]
    return sum(relative_error(a, b) for a, b in zip(s, t))


def test_a_detector_learns_the_tensors_non_max_suppression_reads(tmp_path):
    teacher = export_detector(tmp_path / "teacher.onnx", post_nms_only=True)
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5, round_to=1).model, pruned)
    train, val = images(96, seed=1), images(32, seed=2)
    result = onnxkd.distill(teacher, pruned, {"images": train}, tmp_path / "student.onnx", val_data={"images": val},
                            epochs=8, lr=3e-3)
    assert [(t["output"], t["tensor"], t["loss"], t["inside"]) for t in result.targets] == \
        [("boxes", "boxes", "mse", True), ("scores", "scores", "mse", True)]
    before = _head_error(pruned, teacher, val, tmp_path)
    after = _head_error(tmp_path / "student.onnx", teacher, val, tmp_path)
    assert after < 0.5 * before
    outputs = ort_outputs(tmp_path / "student.onnx", {"images": val[:4]})  # still an end-to-end detector
    assert [o.shape[1] for o in outputs] == [3, 4]
