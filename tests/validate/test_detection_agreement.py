"""Detection agreement of a YOLO-family output: the student's detections scored with mAP@0.5 against the teacher's.
Oracle: outputs built by hand with boxes whose AP is worked out here."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkd.graph_passes.analyze.output_parts import OutputParts, Part
from onnxkd.validate.detections import agreement, has_detections

V8 = OutputParts(1, (Part(0, 4, False), Part(4, 6, True)))  # [N, 4 + 2 classes, anchors]
V5 = OutputParts(2, (Part(0, 4, False), Part(4, 7, True)))  # [N, anchors, 4 + objectness + 2 classes]


def _v8(*anchors) -> np.ndarray:
    """One image, [1, 6, A]: each anchor (cx, cy, w, h, class-0 probability, class-1 probability)."""
    return np.array(anchors, np.float32).T[None]


# two objects: a class-0 box at (20, 20) and a class-1 box at (60, 60); and an empty anchor
A, B, EMPTY = (20, 20, 10, 10, 0.9, 0.0), (60, 60, 16, 16, 0.0, 0.8), (40, 40, 8, 8, 0.0, 0.0)


def test_the_same_detections_agree_fully():
    teacher = _v8(A, B, EMPTY)
    found = agreement(teacher, teacher.copy(), V8)
    assert found == {"map50": 1.0, "teacher_boxes": 2, "student_boxes": 2, "confidence": 0.25}


@pytest.mark.parametrize("student, expected", [
    ((A, (60, 60, 16, 16, 0.0, 0.0), EMPTY), 0.5),  # the class-1 box missed: AP 1 and 0
    (((35, 20, 10, 10, 0.9, 0.0), B, EMPTY), 0.5),  # the class-0 box moved 15 px: IoU 0.0, AP 0 and 1
    (((20, 20, 10, 10, 0.5, 0.0), B, (90, 90, 10, 10, 0.7, 0.0)), 0.75),  # a false class-0 box ranked first: AP 0.5
    ((A, B, (61, 61, 16, 16, 0.0, 0.3)), 1.0),  # a duplicate of B, suppressed by NMS (IoU 0.78 > 0.6)
])
def test_missed_moved_and_extra_boxes(student, expected):
    assert agreement(_v8(A, B, EMPTY), _v8(*student), V8)["map50"] == pytest.approx(expected)


def test_objectness_scales_the_class_probabilities_where_the_parts_are_last():
    """[N, anchors, 5 + classes]: objectness 0.2 x class 0.9 = 0.18, under the teacher's 0.25: not a box."""
    teacher = np.array([[[20, 20, 10, 10, 0.9, 1.0, 0.0], [60, 60, 16, 16, 0.2, 0.0, 0.9]]], np.float32)
    found = agreement(teacher, teacher.copy(), V5)
    assert found["teacher_boxes"] == 1 and found["map50"] == 1.0
    assert has_detections(V5, teacher.shape) and has_detections(V8, (1, 6, 3))
    assert not has_detections(OutputParts(2, (Part(0, 4, True), Part(4, 6, False))), (1, 10, 6))
    assert not has_detections(OutputParts(2, (Part(0, 2, False), Part(2, 6, True))), (1, 10, 6))


def test_mask_coefficients_after_the_scores_are_not_scored():
    """YOLOv8-seg: [N, 4 + classes + 32 mask coefficients, anchors]; coefficients that differ change nothing."""
    parts = OutputParts(1, (Part(0, 4, False), Part(4, 6, True), Part(6, 9, False)))
    teacher = np.concatenate([_v8(A, B, EMPTY), np.full((1, 3, 3), 5.0, np.float32)], 1)
    student = teacher.copy()
    student[:, 6:] = -7.0
    assert has_detections(parts, teacher.shape)
    assert agreement(teacher, student, parts) == agreement(teacher, teacher, parts) == {
        "map50": 1.0, "teacher_boxes": 2, "student_boxes": 2, "confidence": 0.25}
