"""A model that returns an embedding [N, 128] before its logits [N, 10]: both look like class scores, and the
labels belong to the logits. Cross-entropy went to the embedding, and accuracy was measured on it (the teacher
read 0.0%). Oracle: onnxruntime's logits against the labels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxkd
from onnxkd.quantize.accuracy import compare

from ort_oracle import ort_outputs


@pytest.fixture(scope="module")
def two_heads(digits, tmp_path_factory):
    model = onnx.load(str(digits["teacher"]))
    logits = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("/Flatten_output_0", TensorProto.FLOAT, ["N", 128])]
                              + logits)
    path = tmp_path_factory.mktemp("two_heads") / "two_heads.onnx"
    onnx.save(model, str(path))
    return path


def _accuracy(path, data) -> float:
    return float(np.mean(ort_outputs(path, {"image": data["image"]})[1].argmax(1) == data["labels"]))


def test_labels_train_and_measure_the_logits_not_the_embedding(two_heads, digits, small_digits, tmp_path):
    pruned, student = tmp_path / "pruned.onnx", tmp_path / "student.onnx"
    onnxkd.save(onnxkd.prune(two_heads, 0.5).model, pruned)
    onnxkd.distill(two_heads, pruned, digits["train"], student, val_data=small_digits["val"], epochs=3)
    val = np.load(digits["val"])
    checked = onnxkd.validate(two_heads, student, digits["val"], runs=5, warmup=1, budget_s=0.2)
    assert checked.accuracy["output"] == "logits"
    assert checked.accuracy["teacher"] == pytest.approx(_accuracy(two_heads, val)) and checked.accuracy["teacher"] > 0.9
    assert checked.accuracy["student"] == pytest.approx(_accuracy(student, val)) and checked.accuracy["student"] > 0.9


def test_quantizes_budget_is_the_logits_accuracy(two_heads, digits):
    val = np.load(digits["val"])
    reference = ort_outputs(two_heads, {"image": val["image"]})
    worse = [reference[0], reference[1].copy()]
    worse[1][:36] = worse[1][:36, ::-1]  # a tenth of the samples now predict another class
    quality = compare(reference, worse, val["labels"])
    assert quality.metric == "accuracy" and quality.float_value == pytest.approx(_accuracy(two_heads, val))
    assert quality.int8_value == pytest.approx(np.mean(worse[1].argmax(1) == val["labels"]))


def test_taylor_gradients_are_the_cross_entropy_of_the_logits(two_heads, digits):
    from onnxkd.torch_bridge.gradients import initializer_gradients

    data = np.load(digits["val"])
    feeds, labels = {"image": data["image"][:64]}, data["labels"][:64]
    expected = initializer_gradients(digits["teacher"], feeds, labels)  # the model with its logits alone
    got = initializer_gradients(two_heads, feeds, labels)
    for name, grad in expected.items():
        np.testing.assert_allclose(got[name], grad, rtol=1e-5, atol=1e-7)
