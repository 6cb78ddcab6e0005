"""Outputs whose samples are not on axis 0: a CTC recognizer exported the way torch's CTC loss takes its input
returns log-probabilities [time, batch, classes]. validate concatenated such outputs along time (an internal error
when the last batch was short) and distill's teacher cache stored them by sample index on the time axis (an
internal error); both now move the samples to axis 0 first."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import onnxkd
from onnxkd.data.batch_axes import batch_axis

FEATURES, STEPS, CLASSES = 4, 12, 6


class TimeMajor(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(FEATURES, 32, 3, padding=1), nn.ReLU(), nn.Conv1d(32, 32, 3, padding=1),
                                  nn.ReLU(), nn.Conv1d(32, CLASSES, 1))

    def forward(self, x):  # [batch, features, time] -> [time, batch, classes]
        return self.conv(x).permute(2, 0, 1).log_softmax(-1)


def _export(module: nn.Module, path):
    torch.onnx.export(module.eval(), (torch.rand(2, FEATURES, STEPS),), str(path), input_names=["x"],
                      output_names=["logprobs"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("time_major")
    torch.manual_seed(0)
    teacher = _export(TimeMajor(), folder / "teacher.onnx")
    torch.manual_seed(1)
    other = _export(TimeMajor(), folder / "other.onnx")
    x = np.random.default_rng(0).standard_normal((30, FEATURES, STEPS)).astype(np.float32)
    return {"teacher": teacher, "other": other, "x": x, "folder": folder}


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_batch_axis_is_the_one_that_grows_from_one_sample_to_two():
    assert batch_axis((STEPS, 1, CLASSES), (STEPS, 2, CLASSES)) == 1
    assert batch_axis((1, 10), (2, 10)) == 0
    assert batch_axis((7, 4), (5, 4)) is None  # rows that follow the data
    assert batch_axis((3,), (3,)) is None  # no per-sample axis


def test_validate_compares_time_major_outputs_sample_by_sample(case):
    """30 samples in batches of 8 (the last one short); the errors equal numpy's on onnxruntime's outputs."""
    result = onnxkd.validate(case["teacher"], case["other"], {"x": case["x"]}, batch_size=8, runs=3, budget_s=0.1)
    quality = result.quality[0]
    assert quality["shape"] == [30, STEPS, CLASSES]
    t, s = _run(case["teacher"], case["x"]), _run(case["other"], case["x"])
    assert quality["mean_abs_error"] == pytest.approx(float(np.abs(t - s).mean()), rel=1e-5)
    assert quality["max_abs_error"] == pytest.approx(float(np.abs(t - s).max()), rel=1e-5)
    # log-probabilities per frame: compared frame by frame as class scores too
    assert quality["per_token"] and quality["top1_agreement"] == pytest.approx(float(np.mean(t.argmax(-1) == s.argmax(-1))))


def test_distillation_learns_a_time_major_output_through_the_teacher_cache(case):
    student = onnxkd.prune(case["teacher"], 0.5, round_to=1).model
    x = case["x"]
    before = float(np.abs(_run(case["teacher"], x) - _run(onnxkd.save(student, case["folder"] / "pruned.onnx"), x)).mean())
    result = onnxkd.distill(case["teacher"], student, {"x": x}, epochs=20, batch_size=8, lr=3e-3, seed=0)
    assert result.teacher_cache["used"]
    distilled = onnxkd.save(result.model, case["folder"] / "distilled.onnx")
    after = float(np.abs(_run(case["teacher"], x) - _run(distilled, x)).mean())
    assert after < 0.5 * before, (before, after)


def test_the_epochs_are_scored_by_agreement_per_frame(case):
    """Log-probabilities per position: each epoch's agreement is per frame, and the best epoch's equals
    onnxruntime's on the held-out data for the student written."""
    val = np.random.default_rng(1).standard_normal((12, FEATURES, STEPS)).astype(np.float32)
    student = onnxkd.prune(case["teacher"], 0.5, round_to=1).model
    result = onnxkd.distill(case["teacher"], student, {"x": case["x"]}, val_data={"x": val}, epochs=3, batch_size=8,
                            lr=3e-3, seed=0)
    distilled = onnxkd.save(result.model, case["folder"] / "scored.onnx")
    same = _run(case["teacher"], val).argmax(-1) == _run(distilled, val).argmax(-1)
    assert result.best["agreement"] is None and result.best["token_agreement"] == pytest.approx(same.mean(), abs=0.02)


def test_kl_on_log_probabilities_per_frame_is_taken_over_the_classes(case):
    """--loss kl on [N, T, C] scores per frame: softmax over C at each frame (it was over the frames: axis 1)."""
    from onnxkd.distill.targets import plan_targets, probed_tensors

    model = onnxkd.load(case["teacher"])
    probe = {name: torch.zeros(2, STEPS, CLASSES) for name in probed_tensors(model)}  # samples first, as cached
    [default] = plan_targets(model, probe)
    [kl] = plan_targets(model, probe, losses={"*": "kl"})
    assert (default.loss, kl.loss, kl.class_axis) == ("mse", "kl", -1)
