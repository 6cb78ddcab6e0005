"""A student pruned with another tool and exported again names its inputs and outputs as its exporter does
(torch's legacy exporter numbers unnamed outputs, dynamo names them after ops). distill and validate refused such
a student; they now pair the values by position: distill trains exactly as under the teacher's names and writes the
student under its own, validate measures what it measures under one set of names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from classifier_heads import deployed

import onnxkd
from onnxkd.errors import OnnxkdError


def _renamed(path, tmp_path, names: dict[str, str]):
    """A copy of the model at ``path`` with values renamed (inputs, outputs, or any tensor)."""
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    out = tmp_path / f"renamed-{len(list(tmp_path.iterdir()))}.onnx"
    onnx.save(model, str(out))
    return out


def _distill(teacher, student, data):
    return onnxkd.distill(teacher, student, data, epochs=1, batch_size=32, seed=0, workers=0)


@pytest.fixture(scope="module")
def data(small_digits):
    return small_digits["train"]


def test_a_student_named_otherwise_trains_as_under_the_teachers_names(digits, digits_student, data, tmp_path):
    teacher_in, teacher_out = (onnx.load(str(digits["teacher"])).graph.input[0].name,
                               onnx.load(str(digits["teacher"])).graph.output[0].name)
    student = _renamed(digits_student, tmp_path, {teacher_in: "input.1", teacher_out: "191"})
    same_names = _distill(digits["teacher"], digits_student, data)
    other_names = _distill(digits["teacher"], student, data)
    assert [v.name for v in other_names.model.graph.inputs] == ["input.1"]
    assert [v.name for v in other_names.model.graph.outputs] == ["191"]
    assert any("paired by position" in w and f"teacher {teacher_out!r} = student '191'" in w
               for w in other_names.warnings)
    trained = {name: t.const_value.numpy() for name, t in other_names.model.graph.initializers.items()}
    for name, init in same_names.model.graph.initializers.items():
        np.testing.assert_array_equal(trained[name], init.const_value.numpy(), err_msg=name)
    assert [v.name for v in onnxkd.load(digits["teacher"]).graph.outputs] == [teacher_out]


def test_a_student_output_named_like_a_tensor_inside_the_teacher(digits, digits_student, data, tmp_path):
    """The teacher, renamed in memory, moves its own tensor of that name out of the way."""
    graph = onnx.load(str(digits["teacher"])).graph
    teacher = _renamed(digits["teacher"], tmp_path, {graph.node[0].output[0]: "191"})
    student = _renamed(digits_student, tmp_path, {graph.output[0].name: "191"})
    same_names = _distill(digits["teacher"], digits_student, data)
    result = _distill(teacher, student, data)
    assert [v.name for v in result.model.graph.outputs] == ["191"]
    assert result.best == same_names.best  # trained as under one set of names


def test_a_deployed_classifier_exported_again_learns_from_its_teachers_logits(digits, digits_student, data, tmp_path):
    """Class id and confidence outputs: the logits behind them are distilled, and in a student exported by another
    tool every tensor inside has another name (distill stopped: no tensor of the student's name in the teacher)."""
    teacher = deployed(digits["teacher"], tmp_path / "teacher.onnx")
    student = deployed(digits_student, tmp_path / "student.onnx")
    graph = onnx.load(str(student)).graph
    inside = {out: f"t{i}" for i, node in enumerate(graph.node) for out in node.output}
    inside.update({"class_id": "label", "confidence": "score", graph.input[0].name: "pixels"})
    foreign = _renamed(student, tmp_path, inside)
    same_names, other_names = _distill(teacher, student, data), _distill(teacher, foreign, data)
    assert [t["tensor"] for t in other_names.targets] == [inside[t["tensor"]] for t in same_names.targets]
    trained = {name: t.const_value.numpy() for name, t in other_names.model.graph.initializers.items()}
    for name, init in same_names.model.graph.initializers.items():
        np.testing.assert_array_equal(trained[name], init.const_value.numpy(), err_msg=name)


def test_names_that_only_partly_match_are_refused(digits, digits_student, tmp_path):
    """Some shared and some not: no pairing is safe to guess."""
    import torch
    from torch import nn

    class TwoOut(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.amax((2, 3))

    def export(names, path):
        torch.onnx.export(TwoOut(), (torch.rand(1, 3, 4, 4),), str(path), input_names=["x"], output_names=names,
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
        return path

    teacher, student = export(["a", "b"], tmp_path / "t.onnx"), export(["a", "c"], tmp_path / "s.onnx")
    with pytest.raises(OnnxkdError, match=r"student's outputs \['a', 'c'\] differ from the teacher's \['a', 'b'\]"):
        onnxkd.distill(teacher, student, None, epochs=1)


def test_validate_measures_a_student_named_otherwise_as_under_the_teachers_names(digits, digits_student, tmp_path):
    graph = onnx.load(str(digits["teacher"])).graph
    student = _renamed(digits_student, tmp_path, {graph.input[0].name: "input.1", graph.output[0].name: "191"})
    same = onnxkd.validate(digits["teacher"], digits_student, digits["val"], runs=3, budget_s=0.1)
    other = onnxkd.validate(digits["teacher"], student, digits["val"], runs=3, budget_s=0.1)
    assert other.accuracy == dict(same.accuracy, output="191") and other.agreement["top1"] == same.agreement["top1"]
    assert other.quality[0]["cosine"] == same.quality[0]["cosine"]
    assert any(f"teacher {graph.output[0].name!r} = student '191'" in w for w in other.warnings)
    assert other.teacher.sha256 == same.teacher.sha256  # the teacher's identity is its file's


def test_validate_compares_outputs_of_the_same_names_in_another_order_by_name(tmp_path):
    """[mean, max] against [max, mean]: compared by position, the mean was held against the max."""
    import torch
    from torch import nn

    class TwoOut(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.amax((2, 3))

    teacher = tmp_path / "t.onnx"
    torch.onnx.export(TwoOut(), (torch.rand(1, 3, 4, 4),), str(teacher), input_names=["x"],
                      output_names=["mean", "max"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    swapped = onnx.load(str(teacher))
    outputs = list(swapped.graph.output)
    del swapped.graph.output[:]
    swapped.graph.output.extend(outputs[::-1])
    student = tmp_path / "s.onnx"
    onnx.save(swapped, str(student))
    data = {"x": np.random.default_rng(0).random((8, 3, 4, 4)).astype(np.float32)}
    result = onnxkd.validate(teacher, student, data, runs=3, budget_s=0.1)
    assert [q["name"] for q in result.quality] == ["max", "mean"]
    assert all(q["max_abs_error"] == 0 for q in result.quality)
