"""Feature hints at the kept channels: the plan's indices against a hand-sliced onnxruntime reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxkd
from onnxkd.distill import hints
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.api import read_plan_details

from ort_oracle import ort_outputs


def test_removed_channels_follow_offsets_and_blocks():
    details = {"groups": [
        {"group": 0, "size": 4, "kept": [0, 2], "members": [["x", 1, 0, 1], ["y", 1, 2, 2]]},
        {"group": 1, "size": 2, "kept": [1], "members": [["y", 1, 10, 1]]},
        {"group": 2, "size": 3, "kept": [0, 1, 2], "members": [["z", 1, 0, 1]]},  # nothing cut
    ]}
    assert hints.removed_channels(details, "x") == {1: [1, 3]}
    # y: group 0 at offset 2 with blocks of 2 (channels 1, 3 -> 4,5 and 8,9), group 1 at offset 10 (channel 0)
    assert hints.removed_channels(details, "y") == {1: [4, 5, 8, 9, 10]}
    assert hints.removed_channels(details, "z") == {}


def _with_output(path, tensor, out):
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    onnx.save(model, str(out))
    return out


def test_hint_selects_the_teachers_kept_channels_like_a_hand_sliced_reference(digits, digits_student, tmp_path):
    """The first layer's output of the student IS the teacher's at the kept channels (its input is not cut):
    onnxruntime computes both, numpy slices the teacher's by the plan, and Hint.select must agree."""
    student_model, teacher_model = onnxkd.load(digits_student), onnxkd.load(digits["teacher"])
    first_relu = next(n for n in student_model.graph if n.op_type == "Relu").outputs[0].name
    details = read_plan_details(digits_student)
    removed = hints.removed_channels(details, first_relu)
    assert list(removed) == [1] and removed[1]

    x = np.load(digits["val"])["image"][:16]
    teacher_feature = ort_outputs(_with_output(digits["teacher"], first_relu, tmp_path / "t.onnx"), {"image": x})[1]
    student_feature = ort_outputs(_with_output(digits_student, first_relu, tmp_path / "s.onnx"), {"image": x})[1]
    kept = [c for c in range(teacher_feature.shape[1]) if c not in set(removed[1])]
    np.testing.assert_allclose(teacher_feature[:, kept], student_feature, rtol=1e-5, atol=1e-6)

    [hint] = hints.resolve([first_relu], teacher_model, student_model, details)
    t, s = torch.from_numpy(teacher_feature), torch.from_numpy(student_feature)
    hint.fit(t, s)
    np.testing.assert_array_equal(hint.select(t).numpy(), teacher_feature[:, kept])


def test_auto_hints_spread_through_the_depth(digits, digits_student):
    student_model, teacher_model = onnxkd.load(digits_student), onnxkd.load(digits["teacher"])
    chosen = hints.resolve(["auto"], teacher_model, student_model, read_plan_details(digits_student))
    names = [h.tensor for h in chosen]
    order = [v.name for node in student_model.graph for v in node.outputs]
    producers = {v.name: node.op_type for node in student_model.graph for v in node.outputs}
    assert 2 <= len(names) <= hints.AUTO_COUNT
    assert names == sorted(names, key=order.index)  # by depth, distinct
    assert all(producers[n] in hints._PREFERRED_PRODUCERS and h.removed for n, h in zip(names, chosen))


def test_hint_errors(digits, digits_student):
    student_model, teacher_model = onnxkd.load(digits_student), onnxkd.load(digits["teacher"])
    details = read_plan_details(digits_student)
    with pytest.raises(OnnxkdError, match="no tensor of that name in the teacher graph"):
        hints.resolve(["nope"], teacher_model, student_model, details)
    with pytest.raises(OnnxkdError, match="--hint auto: the student's prune plan cuts no tensor"):
        hints.resolve(["auto"], teacher_model, student_model, {"groups": []})
    uncovered = hints.Hint("t")
    with pytest.raises(OnnxkdError, match="does not cover this tensor"):
        hints.check_covered(uncovered, torch.zeros(2, 8, 4, 4), torch.zeros(2, 4, 4, 4))
    hints.check_covered(uncovered, torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 4, 4))  # same shape: fine


def test_masked_attention_scores_are_never_auto_hints_and_refused_by_name(zoo_model, tmp_path):
    """A causal decoder adds -inf to its attention scores before the Softmax; a hint there is NaN from the first
    step whatever the learning rate (the run said 'lower --lr'). auto skips every Softmax input, and a hint named
    there is refused before training, naming it."""
    teacher = zoo_model("gpt", "legacy")
    student = tmp_path / "student.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5, prune_normalized=True).model, student)
    teacher_model, student_model = onnxkd.load(teacher), onnxkd.load(student)
    details = read_plan_details(student_model)
    softmax_inputs = {n.inputs[0].name for n in student_model.graph if n.op_type == "Softmax"}
    cut = {name for g in details["groups"] if len(g["kept"]) < g["size"] for name, *_ in g["members"]}
    assert softmax_inputs & cut  # without the rule they are candidates
    chosen = hints.resolve(["auto"], teacher_model, student_model, details)
    assert chosen and not {h.tensor for h in chosen} & softmax_inputs

    masked = sorted(softmax_inputs & cut)[0]
    ids = np.random.default_rng(0).integers(0, 50, (64, 12))
    with pytest.raises(OnnxkdError, match=f"--hint {masked}: the teacher's tensor holds inf or NaN values"):
        onnxkd.distill(teacher, student, {"ids": ids}, epochs=1, hints=[masked])
