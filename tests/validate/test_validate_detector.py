"""validate on an end-to-end detector, whose outputs hold as many rows as NonMaxSuppression keeps: those are
compared by row count, and the boxes and scores it reads element by element. Oracle: onnxruntime on the same
detectors exported with boxes and scores as outputs of their own."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import yolo
from detector import export_detector, images

import onnxkd
from onnxkd.report import markdown

FAST = {"runs": 5, "warmup": 1, "budget_s": 0.2}


def _outputs(path, x, batch=8):
    session = ort.InferenceSession(str(path))
    names = [o.name for o in session.get_outputs()]
    runs = [dict(zip(names, session.run(None, {"images": x[i:i + batch]}))) for i in range(0, len(x), batch)]
    return {name: np.concatenate([run[name] for run in runs]) for name in names}


def test_rows_are_counted_and_the_tensors_before_non_max_suppression_compared(tmp_path):
    teacher = export_detector(tmp_path / "teacher.onnx", post_nms_only=True)
    student = export_detector(tmp_path / "student.onnx", post_nms_only=True, scale_channel=0.5)
    x = images(24)
    result = onnxkd.validate(teacher, student, {"images": x}, batch_size=8, **FAST)
    t = _outputs(export_detector(tmp_path / "t-all.onnx"), x)
    s = _outputs(export_detector(tmp_path / "s-all.onnx", scale_channel=0.5), x)
    by_name = {q["name"]: q for q in result.quality}
    assert list(by_name) == ["selected", "det_boxes", "boxes", "scores"]
    for name in ("selected", "det_boxes"):
        assert by_name[name]["data_shaped"] == "NonMaxSuppression" and by_name[name]["cosine"] is None
        assert by_name[name]["rows"] == {"teacher": len(t[name]), "student": len(s[name])}
    assert len(t["selected"]) != len(s["selected"])  # the student keeps other boxes: no element-wise comparison
    for name in ("boxes", "scores"):
        q = by_name[name]
        assert q["read_by"] == "NonMaxSuppression" and q["shape"] == list(t[name].shape)
        assert q["max_abs_error"] == pytest.approx(np.abs(t[name] - s[name]).max(), rel=1e-4)
        a, b = t[name].ravel().astype(np.float64), s[name].ravel().astype(np.float64)
        assert q["cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-6)
    assert result.agreement is None  # det_boxes is [K, 4] floats, not class scores
    text = markdown.render(result.to_dict())
    assert f"{len(t['selected']):,} / {len(s['selected']):,} rows (NonMaxSuppression)" in text
    assert "boxes (read by NonMaxSuppression)" in text


def test_a_yolo_output_is_compared_part_by_part(yolo_model, tmp_path):
    """A YOLO-family output holds box coordinates in pixels next to class probabilities: a student whose scores
    are all wrong keeps a cosine near 1 on the whole tensor. Each part's figures are reported, recomputed here
    from onnxruntime's outputs."""
    import onnx
    from onnx import numpy_helper

    teacher = yolo_model("v8", "legacy")
    model = onnx.load(str(teacher))
    for tensor in model.graph.initializer:  # the class head's last bias shifted for class 0: its scores fall
        if tensor.name.startswith("cls.") and tensor.name.endswith(".1.bias"):
            tensor.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(tensor) - np.float32([3, 0, 0])).astype(np.float32), tensor.name))
    student = tmp_path / "student.onnx"
    onnx.save(model, str(student))
    x = yolo.images(16, seed=3)
    result = onnxkd.validate(teacher, student, {"images": x}, batch_size=8, **FAST)
    t, s = _outputs(teacher, x)["output0"], _outputs(student, x)["output0"]
    (q,) = result.quality
    assert q["cosine"] > 0.999  # the whole tensor hides it
    boxes, scores = q["parts"]
    assert (boxes["start"], boxes["stop"], boxes["probabilities"]) == (0, 4, False)
    assert (scores["start"], scores["stop"], scores["probabilities"]) == (4, 7, True)
    for part, piece in ((boxes, slice(0, 4)), (scores, slice(4, 7))):
        a, b = t[:, piece].astype(np.float64), s[:, piece].astype(np.float64)
        assert part["mean_abs_error"] == pytest.approx(np.abs(a - b).mean(), rel=1e-5)
        assert part["cosine"] == pytest.approx((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-6)
        assert part["relative_error"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-5)
    assert boxes["mean_abs_error"] == 0 and scores["relative_error"] > 0.5
    text = markdown.render(result.to_dict())
    assert "output0 [4:7] probabilities" in text and "part by part" in text
    # class 0's detections are lost: an agreement well under 1, which gates can use
    found = q["detections"]
    assert found["teacher_boxes"] > 0 and found["map50"] < 0.9
    assert "the student's detections reach mAP@0.5" in text
    same = onnxkd.validate(teacher, teacher, {"images": x}, batch_size=8, min_agreement=0.99, **FAST)
    assert same.quality[0]["detections"]["map50"] == 1.0 and same.passed
    gated = onnxkd.validate(teacher, student, {"images": x}, batch_size=8, min_agreement=0.99, **FAST)
    assert not gated.passed and gated.gates[0]["value"] == pytest.approx(found["map50"])
