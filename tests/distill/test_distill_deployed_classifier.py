"""A classifier exported for deployment (class id and confidence, no scores among its outputs) is distilled on
its logits with its labels (it stopped: 'no output is class scores'), and validated on its class ids.
Oracle: onnxruntime's class ids against the labels."""

from __future__ import annotations

import numpy as np
import pytest
from classifier_heads import deployed

import onnxkd

from ort_oracle import ort_outputs


def _accuracy(path, data) -> float:
    return float(np.mean(ort_outputs(path, {"image": data["image"]})[0] == data["labels"]))


def test_a_class_id_classifier_learns_its_logits_and_is_judged_by_its_class_ids(digits, small_digits, tmp_path):
    teacher = deployed(digits["teacher"], tmp_path / "deployed.onnx")
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.6, round_to=1).model, pruned)
    student = tmp_path / "student.onnx"
    result = onnxkd.distill(teacher, pruned, digits["train"], student, val_data=small_digits["val"], epochs=4)
    [target] = result.targets
    assert (target["output"], target["tensor"], target["loss"], target["class_scores"]) == \
        ("class_id", "logits", "kl", True)
    val = np.load(digits["val"])
    assert _accuracy(student, val) > _accuracy(pruned, val) + 0.05
    checked = onnxkd.validate(teacher, student, digits["val"], runs=5, warmup=1, budget_s=0.2)
    assert checked.accuracy["output"] == "class_id"
    assert checked.accuracy["teacher"] == pytest.approx(_accuracy(teacher, val))
    assert checked.accuracy["student"] == pytest.approx(_accuracy(student, val))
    ids = [ort_outputs(path, {"image": val["image"]})[0] for path in (teacher, student)]
    assert checked.agreement["top1"] == pytest.approx(np.mean(ids[0] == ids[1]))
