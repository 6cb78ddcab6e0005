"""Fixtures for the validate/report/data tests: a teacher, a student and a labelled npz on disk."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_onnx import IMAGE, CLASSES, classifier, forward


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Paths and weights of a teacher (8/16 channels) and a student (4/8 channels)."""
    folder = tmp_path_factory.mktemp("models")
    teacher, tw = classifier(8, 16, name="teacher")
    student, sw = classifier(4, 8, name="student")
    onnx.save(teacher, folder / "teacher.onnx")
    onnx.save(student, folder / "student.onnx")
    return {"teacher": folder / "teacher.onnx", "student": folder / "student.onnx", "tw": tw, "sw": sw,
            "folder": folder}


@pytest.fixture(scope="session")
def labelled(models):
    """An npz of 40 images with labels, the teacher's and student's argmax computed by the numpy oracle."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, *IMAGE)).astype(np.float32)
    t_pred = forward(models["tw"], x).argmax(1)
    s_pred = forward(models["sw"], x).argmax(1)
    # labels = teacher's prediction on the first 30 samples, something else on the last 10: teacher accuracy 0.75
    labels = t_pred.copy()
    labels[30:] = (t_pred[30:] + 1) % CLASSES
    path = models["folder"] / "data.npz"
    np.savez(path, x=x, labels=labels)
    return {"path": path, "x": x, "labels": labels, "t_pred": t_pred, "s_pred": s_pred}
