"""An end-to-end detector (NonMaxSuppression in the graph) distils on the boxes and scores NonMaxSuppression
reads, per sample, instead of its outputs, whose row counts follow the data (it stopped with an internal error).
Oracle: onnxruntime on the models with those tensors made outputs."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_a_yolo_output_is_learned_through_the_heads_it_is_decoded_from(yolo_model, tmp_path):
    """A YOLO output puts box coordinates in pixels next to class probabilities: the student learns each level's
    box and class logits instead (the output is a fixed function of them), each with its share of the output's
    weight, and both parts of the output come closer to the teacher's. ``--loss output0=mse`` keeps the output."""
    import yolo

    teacher = yolo_model("v8", "legacy")
    pruned = onnxkd.save(onnxkd.prune(teacher, 0.5, round_to=1).model, tmp_path / "pruned.onnx")
    train, val = yolo.images(96, seed=1), yolo.images(32, seed=2)
    result = onnxkd.distill(teacher, pruned, {"images": train}, tmp_path / "student.onnx", val_data={"images": val},
                            epochs=6, lr=3e-3)
    graph = onnx.load(str(teacher)).graph
    heads = [node.output[0] for node in graph.node if node.op_type == "Conv"
             and node.input[1].startswith(("box.", "cls.")) and node.input[1].endswith(".1.weight")]
    # and the logits the decode's Sigmoid (classes) and Softmax (DFL bins, axis 1) read, as probabilities
    probabilities = [(node.input[0], "binary_kl" if node.op_type == "Sigmoid" else "kl") for node in graph.node
                     if node.op_type in ("Sigmoid", "Softmax") and node.name.startswith(("/Sigmoid", "/dfl/"))]
    assert [(t["tensor"], t["loss"], t["inside"]) for t in result.targets] == \
        [(h, "mse", True) for h in heads] + [(t, kind, True) for t, kind in probabilities]
    assert len(heads) == 6 and sorted(kind for _, kind in probabilities) == ["binary_kl", "kl"]
    assert sum(t["weight"] for t in result.targets) == pytest.approx(1.0)
    assert {t["temperature"] for t in result.targets[6:]} == {1.0} and result.targets[-1]["class_axis"] in (1, 6)
    t, before, after = (ort_outputs(p, {"images": val})[0] for p in (teacher, pruned, tmp_path / "student.onnx"))
    for part in (slice(0, 4), slice(4, 7)):  # boxes, then scores: each closer to the teacher's
        assert relative_error(after[:, part], t[:, part]) < 0.5 * relative_error(before[:, part], t[:, part])
    kept = onnxkd.distill(teacher, pruned, {"images": train[:16]}, tmp_path / "s2.onnx", epochs=1, loss={"output0": "mse"})
    assert [(t["tensor"], t["inside"]) for t in kept.targets] == [("output0", False)]
