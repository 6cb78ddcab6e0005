"""Models exported for deployment, with class ids and no scores among their outputs: a classifier's class id and
confidence is distilled on its logits with its labels (it stopped: 'no output is class scores') and validated on
its class ids; a segmentation net's class map on its scores map. Oracle: onnxruntime's class ids."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
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


class _ClassMap(torch.nn.Module):
    """A segmentation net exported with its ArgMax: a class id per pixel, no scores among the outputs."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 5, 1))

    def forward(self, x):
        return self.net(x).argmax(1)


def test_a_class_map_learns_its_scores_map_and_is_judged_by_the_share_of_pixels_that_agree(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "segmenter.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_ClassMap().eval(), (torch.randn(2, 3, 16, 16),), str(teacher), dynamo=False,
                          input_names=["x"], output_names=["mask"], dynamic_axes={"x": {0: "b"}, "mask": {0: "b"}})
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5, round_to=1).model, pruned)
    x = np.random.default_rng(0).standard_normal((96, 3, 16, 16)).astype(np.float32)
    student = tmp_path / "student.onnx"
    result = onnxkd.distill(teacher, pruned, {"x": x[:64]}, student, val_data={"x": x[64:]}, epochs=2)
    [target] = result.targets
    assert target["output"] == "mask" and target["tensor"] != "mask" and target["loss"] == "mse"  # the scores map
    checked = onnxkd.validate(teacher, student, {"x": x[64:]}, runs=5, warmup=1, budget_s=0.2)
    [mask] = checked.quality
    t, s = (ort_outputs(path, {"x": x[64:]})[0] for path in (teacher, student))
    assert mask["class_ids"] and mask["top1_agreement"] == pytest.approx(np.mean(t == s))
    assert mask["cosine"] is None and checked.agreement is None  # one id per pixel: not a per-sample class
