"""Iterative pruning stopped between or during steps continues from its work folder, to the same student an
uninterrupted run gives (the oracle: the uninterrupted run itself, every step deterministic here)."""

from __future__ import annotations

import types

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxkd
from onnxkd.data import fit_to_model, input_specs, load_npz
from onnxkd.distill import iterative
from onnxkd.distill.config import DistillConfig
from onnxkd.distill.iterative import iterative_prune


@pytest.fixture(scope="module")
def digits_data(digits):
    teacher = onnx.load(str(digits["teacher"]))
    return fit_to_model(load_npz(digits["train"]), input_specs(teacher)).take(np.arange(128))


class ShrinkingDistill:
    """A stand-in for the distillation between steps: every float weight x0.9 plus a ramp, so that the next
    step's l1 scores depend on it; raises KeyboardInterrupt on call number ``stop_at`` (after recording it)."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.calls = stop_at, []

    def __call__(self, teacher, student, data, **kwargs):
        self.calls.append((student, kwargs))
        if len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        model = onnxkd.load(student)
        for value in model.graph.initializers.values():
            array = value.const_value.numpy()
            if array.dtype == np.float32 and array.ndim > 1:
                ramp = np.linspace(0, 0.01, array.size, dtype=np.float32).reshape(array.shape)
                value.const_value = ir.Tensor(array * 0.9 + ramp)
        return types.SimpleNamespace(model=model, wall_s=0.0, best={"epoch": 1})


def _weights(model):
    return {n: v.const_value.numpy() for n, v in model.graph.initializers.items()}


@pytest.mark.parametrize("stop_at", [1, 2])  # during the distillation after step 1, after step 2
def test_a_resumed_run_gives_the_uninterrupted_runs_student(digits, digits_data, tmp_path, stop_at):
    config = DistillConfig(epochs=1)
    whole = iterative_prune(digits["teacher"], 0.5, 3, digits_data, criterion="l1", config=config,
                            distill=ShrinkingDistill())

    work = tmp_path / "steps"
    with pytest.raises(KeyboardInterrupt):
        iterative_prune(digits["teacher"], 0.5, 3, digits_data, criterion="l1", config=config,
                        distill=ShrinkingDistill(stop_at), work_dir=work)
    again = ShrinkingDistill()
    resumed = iterative_prune(digits["teacher"], 0.5, 3, digits_data, criterion="l1", config=config,
                              distill=again, work_dir=work, resume=True)

    # the interrupted distillation is redone on the saved student of its step (its epoch checkpoint names
    # that file), and the steps before it are not redone
    assert [str(student) for student, _ in again.calls][0] == str(work / f"step-{stop_at}.pruned.onnx")
    assert len(again.calls) == 3 - stop_at and again.calls[0][1]["work_dir"] == work / "distill"
    assert resumed.plan == whole.plan
    assert [s["channels"] for s in resumed.steps] == [s["channels"] for s in whole.steps]
    got, expected = _weights(resumed.model), _weights(whole.model)
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_resume_refuses_steps_saved_for_another_ratio(digits, digits_data, tmp_path):
    work = tmp_path / "steps"
    with pytest.raises(KeyboardInterrupt):
        iterative_prune(digits["teacher"], 0.5, 2, digits_data, criterion="l1", config=DistillConfig(epochs=1),
                        distill=ShrinkingDistill(1), work_dir=work)
    with pytest.raises(onnxkd.OnnxkdError, match="were for ratio 0.5 in 2 steps, not 0.4 in 2"):
        iterative_prune(digits["teacher"], 0.4, 2, digits_data, criterion="l1", work_dir=work, resume=True)


def test_compress_steps_resume_after_ctrl_c_in_the_first_stage(digits, small_digits, tmp_path, monkeypatch):
    """The pipeline's side: a run stopped inside its prune stage is a run --resume finds, and its
    completed step is not pruned again."""
    from onnxkd.distill import api

    real, calls = api.distill, []

    def stopped_once(teacher, student, *args, **kwargs):
        calls.append(student)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(teacher, student, *args, **kwargs)

    monkeypatch.setattr(api, "distill", stopped_once)
    scored = []
    monkeypatch.setattr(iterative, "_scores", lambda *a, **k: scored.append(a[1]) or {})
    args = dict(ratio=0.5, data=small_digits["train"], val_data=small_digits["val"], steps=2, epochs=1,
                criterion="l1", output=tmp_path / "student.onnx")
    with pytest.raises(KeyboardInterrupt):
        onnxkd.compress(digits["teacher"], **args)
    assert not (tmp_path / "student.onnx").exists()
    result = onnxkd.compress(digits["teacher"], resume=True, **args)
    work = tmp_path / "student.onnx.work"
    # scored: the teacher once, then step 2's student (a run started over would score the teacher again)
    assert calls[1] == work / "prune-steps" / "step-1.pruned.onnx" and len(scored) == 2
    assert [s["step"] for s in result.to_dict()["compress"]["prune"]["steps"]] == [1, 2]
    assert (tmp_path / "student.onnx").exists() and not work.exists()


def test_a_distillation_that_returns_its_student_unchanged_with_external_weights(digits, digits_data, tmp_path):
    """A distillation where no epoch did better returns the student it was given, still reading its weights from
    the step's file: saving it over that file removed the weights it read (compress --steps 2 on torch's default
    export failed with 'cannot write'). The oracle: the run without a work folder, where nothing is saved."""
    teacher = tmp_path / "t.onnx"
    onnx.save_model(onnx.load(str(digits["teacher"])), str(teacher), save_as_external_data=True,
                    location="t.onnx.data", size_threshold=0)

    def unchanged(teacher_model, student, data, **kwargs):
        return types.SimpleNamespace(model=onnxkd.load(student), wall_s=0.0, best=None)

    # a group left whole keeps weights that pruning never copies: they stay read from the file
    config, kept = DistillConfig(epochs=1), dict(criterion="l1", ignore=r"features\.[12]\.")  # conv 2: untouched
    saved = iterative_prune(teacher, 0.5, 3, digits_data, config=config, distill=unchanged,
                            work_dir=tmp_path / "steps", **kept)
    in_memory = iterative_prune(teacher, 0.5, 3, digits_data, config=config, distill=unchanged, **kept)
    got, expected = _weights(saved.model), _weights(in_memory.model)
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
