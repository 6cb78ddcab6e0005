"""Teacher targets beyond --cache-mb: a disk cache in the work folder when it is measured to pay, else the teacher
at every step; either way the student is the one a memory cache gives."""

from __future__ import annotations

import numpy as np
import pytest

import onnxkd
from onnxkd.distill import teacher_cache

FAST = dict(epochs=2, batch_size=32, seed=1)


def _weights(model) -> dict[str, np.ndarray]:
    return {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}


@pytest.mark.parametrize("disk", ["fast", "slow"])
def test_beyond_the_budget_the_measured_choice_trains_the_same_student(digits, digits_student, small_digits,
                                                                      tmp_path, monkeypatch, disk):
    """A fast disk (as measured) gets a disk cache, a slow one the teacher at every step; both runs write the
    student of a memory-cached run, bit for bit, and leave no cache files behind."""
    memory = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "memory.onnx",
                            val_data=small_digits["val"], **FAST)
    assert memory.teacher_cache["where"] == "memory"

    seconds_per_byte = {"fast": (1e-12, 1e-12), "slow": (1e-3, 1e-3)}[disk]
    monkeypatch.setattr(teacher_cache, "disk_seconds_per_byte", lambda folder: seconds_per_byte)
    lines = []
    work = tmp_path / "work"
    result = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "over.onnx",
                            val_data=small_digits["val"], cache_mb=0.0, work_dir=work,
                            progress=lambda e: lines.append(e.get("text", "")), **FAST)
    cache = result.teacher_cache
    assert cache["where"] == ("disk" if disk == "fast" else "none")
    assert "exceed --cache-mb 0" in cache["reason"] and "ms/sample" in cache["reason"]
    assert any(cache["reason"] in line for line in lines)  # printed
    assert cache["measured"]["teacher_ms_per_sample"] > 0
    for name, value in _weights(memory.model).items():
        np.testing.assert_array_equal(_weights(result.model)[name], value, err_msg=name)
    assert not work.exists() or not any(work.iterdir())


def test_without_a_work_folder_the_teacher_runs_at_every_step(digits, digits_student, small_digits):
    result = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], val_data=small_digits["val"],
                            cache_mb=0.0, **FAST)
    assert result.teacher_cache["where"] == "none" and "no work folder" in result.teacher_cache["reason"]
    assert any("no work folder" in w for w in result.warnings)


def test_the_disk_probe_measures_a_real_file(tmp_path):
    write, read = teacher_cache.disk_seconds_per_byte(tmp_path)
    assert 0 < write < 1e-3 and 0 < read < 1e-3  # between 1 kB/s and "infinitely fast": a measurement was made
    assert not list(tmp_path.iterdir())
