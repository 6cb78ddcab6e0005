"""Detection agreement for YOLO-family outputs: the student's boxes scored against the teacher's.

Element-wise figures say how far the numbers moved; a deployment engineer asks whether the student finds what the
teacher finds. Both outputs are turned into detections as ultralytics' predictors do (the best class per anchor,
confidence above a threshold, class-aware NMS at IoU 0.6, at most 300 per image), and the student's are scored
with mAP@0.5 (VOC all-point AP per class, averaged over the classes the teacher detects) against the teacher's
detections with confidence above 0.25 as the ground truth: 1.0 for a student that finds every box the teacher
finds, no other, and ranks them alike.

Layouts (``output_parts``): box coordinates (cx, cy, w, h) at [0:4] of the part axis, then probabilities (then,
in segmenting and pose models, mask coefficients or keypoints, which are not scored). With the parts on the last axis, ``[N, anchors, 5 + classes]`` (YOLOv5, v7, YOLOX), the first
probability is the objectness, and a class's confidence is objectness x class probability; on another axis,
``[N, 4 + classes, anchors]`` (YOLOv8 to v11), the probabilities are the classes'. Other layouts get no figure.
"""

from __future__ import annotations

import numpy as np

from onnxkd.graph_passes.analyze.output_parts import OutputParts

CONFIDENCE = 0.25  # the teacher's detections kept as the ground truth (ultralytics' default)
RANKED = 0.001  # the student's detections ranked for AP (ultralytics' validation default)
NMS_IOU, TOP, MATCH_IOU = 0.6, 300, 0.5


def has_detections(parts: OutputParts, shape: tuple[int, ...]) -> bool:
    """Boxes at [0:4] of the part axis, then probabilities, then nothing or other values to its end (a
    segmenting detector's mask coefficients, a pose model's keypoints), anchors on one other axis."""
    first, *rest = parts.parts
    return (len(shape) == 3 and parts.axis in (1, 2) and (first.start, first.stop, first.probabilities) == (0, 4, False)
            and len(rest) in (1, 2) and rest[0].probabilities and rest[-1].stop == shape[parts.axis])


def decoded(output: np.ndarray, parts: OutputParts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and anchor: boxes (x1, y1, x2, y2) [N, A, 4], the best class's confidence [N, A] and that class."""
    rows = output if parts.axis == 2 else output.transpose(0, 2, 1)  # [N, A, features]
    rows = rows.astype(np.float64)
    centre, size = rows[..., 0:2], rows[..., 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1)
    scores = rows[..., 4:parts.parts[1].stop]
    if parts.axis == 2:  # objectness first: a class's confidence is objectness x class probability
        scores = scores[..., :1] * scores[..., 1:] if scores.shape[-1] > 1 else scores
    return boxes, scores.max(-1), scores.argmax(-1)


def detections(boxes: np.ndarray, confidence: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """One image's detections [K, 6] (x1, y1, x2, y2, confidence, class), best first: class-aware greedy NMS."""
    keep = np.flatnonzero(confidence > threshold)
    keep = keep[np.argsort(-confidence[keep], kind="stable")][:10 * TOP]
    if not len(keep):
        return np.zeros((0, 6))
    # boxes of different classes never overlap once each class is moved to a region of its own
    shifted = boxes[keep] + (classes[keep] * (np.abs(boxes[keep]).max() + 1) * 4)[:, None]
    overlaps = box_iou(shifted, shifted)
    chosen, suppressed = [], np.zeros(len(keep), bool)
    for i in range(len(keep)):
        if suppressed[i]:
            continue
        chosen.append(i)
        if len(chosen) == TOP:
            break
        suppressed |= overlaps[i] > NMS_IOU
    picked = keep[chosen]
    return np.concatenate([boxes[picked], confidence[picked, None], classes[picked, None]], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [K, 4+] with every box in ``b`` [M, 4+] (x1, y1, x2, y2)."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), 2)
    area_a, area_b = (np.prod(np.clip(x[:, 2:4] - x[:, :2], 0, None), 1) for x in (a, b))
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def mean_ap(found: list[np.ndarray], truth: list[np.ndarray], iou: float = MATCH_IOU) -> float | None:
    """VOC all-point AP at ``iou`` per class of ``truth`` ([K, 5+] rows: x1, y1, x2, y2, ..., class last), averaged;
    ``found``: [K, 6] rows (x1, y1, x2, y2, confidence, class). None when ``truth`` holds no box."""
    classes = sorted({int(c) for t in truth for c in t[:, -1]})
    aps = []
    for c in classes:
        total, ranked = 0, []
        for mine, theirs in zip(found, truth):
            mine, theirs = mine[mine[:, 5] == c], theirs[theirs[:, -1] == c]
            total += len(theirs)
            used = np.zeros(len(theirs), bool)
            overlaps = box_iou(mine, theirs) if len(mine) and len(theirs) else np.zeros((len(mine), 0))
            for row, overlap in zip(mine, overlaps):  # best first: each takes the best box still free
                free = np.where(used, -1.0, overlap)
                j = int(np.argmax(free)) if len(free) else -1
                hit = j >= 0 and free[j] >= iou
                if hit:
                    used[j] = True
                ranked.append((row[4], hit))
        ranked.sort(key=lambda item: -item[0])
        hits = np.array([hit for _, hit in ranked], np.float64)
        if not len(hits):
            aps.append(0.0)
            continue
        recall = np.cumsum(hits) / total
        precision = np.maximum.accumulate((np.cumsum(hits) / np.arange(1, len(hits) + 1))[::-1])[::-1]
        aps.append(float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision)))
    return float(np.mean(aps)) if aps else None


def agreement(teacher: np.ndarray, student: np.ndarray, parts: OutputParts) -> dict:
    """The student's detections scored against the teacher's: {map50, teacher_boxes, student_boxes, confidence}
    (``map50`` None when the teacher detects nothing above ``CONFIDENCE``)."""
    truth, found, counted = [], [], 0
    for t_image, s_image in zip(zip(*decoded(teacher, parts)), zip(*decoded(student, parts))):
        theirs = detections(*t_image, CONFIDENCE)
        truth.append(theirs[:, [0, 1, 2, 3, 5]])
        mine = detections(*s_image, RANKED)
        found.append(mine)
        counted += int((mine[:, 4] > CONFIDENCE).sum())
    return {"map50": mean_ap(found, truth), "teacher_boxes": sum(len(t) for t in truth), "student_boxes": counted,
            "confidence": CONFIDENCE}
