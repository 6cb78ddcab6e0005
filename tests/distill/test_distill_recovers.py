"""Acceptance: distillation brings real pruned students back, measured with onnxruntime (not the bridge)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import onnxkd
from onnxkd.graph_passes.api import read_plan

from ort_oracle import ort_accuracy, ort_outputs, relative_error

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import models  # noqa: E402


def test_digits_student_recovers_to_within_one_point_of_the_teacher(digits, digits_student, tmp_path):
    """The digits CNN pruned at 0.5 collapses; `onnxkd distill` with default options brings it back."""
    from click.testing import CliRunner

    from onnxkd.cli import cli

    teacher_accuracy = ort_accuracy(digits["teacher"], digits["val"])
    pruned_accuracy = ort_accuracy(digits_student, digits["val"])
    assert teacher_accuracy > 0.98
    assert pruned_accuracy < teacher_accuracy - 0.2  # pruning alone is not a usable model

    out = tmp_path / "student.onnx"
    result = CliRunner().invoke(cli, ["distill", str(digits["teacher"]), str(digits_student), "--data",
                                      str(digits["train"]), "--val-data", str(digits["val"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    distilled_accuracy = ort_accuracy(out, digits["val"])
    assert distilled_accuracy >= teacher_accuracy - 0.01, (teacher_accuracy, pruned_accuracy, distilled_accuracy)
    assert read_plan(out) == read_plan(digits_student) and read_plan(out)  # the plan travels with the student
    assert "distilled (epoch" in result.output and f"Wrote {out}" in result.output


def test_map_output_error_falls_five_fold_with_mse(tmp_path):
    """A dense-prediction model (UNet, map output): MSE distillation cuts its error against the teacher 5x."""
    teacher = models.export("unet", tmp_path, "legacy")
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5).model, pruned)
    rng = np.random.default_rng(0)
    train = {"input": rng.standard_normal((256, 3, 32, 32)).astype(np.float32)}
    val = {"input": rng.standard_normal((64, 3, 32, 32)).astype(np.float32)}
    out = tmp_path / "student.onnx"
    result = onnxkd.distill(teacher, pruned, train, out, val_data=val, epochs=4)
    assert result.targets == [{"output": "output", "tensor": "output", "loss": "mse", "weight": 1.0,
                               "class_scores": False, "inside": False, "class_axis": 1, "temperature": None}]

    expected = ort_outputs(teacher, val)[0]
    before = relative_error(ort_outputs(pruned, val)[0], expected)
    after = relative_error(ort_outputs(out, val)[0], expected)
    assert after * 5 <= before, (before, after)
    # the bridge's own validation figure agrees with onnxruntime's (same formula, same samples)
    assert result.best["output_error"] == pytest.approx(after, rel=1e-3)
