"""validate on an end-to-end detector, whose outputs hold as many rows as NonMaxSuppression keeps: those are
compared by row count, and the boxes and scores it reads element by element. Oracle: onnxruntime on the same
detectors exported with boxes and scores as outputs of their own."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
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
