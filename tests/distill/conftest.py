"""Shared fixtures: the digits example (a real CNN teacher and its data), pruned students, onnxruntime oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxkd

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def ort_outputs(path, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ort_accuracy(path, npz) -> float:
    data = np.load(npz)
    logits = ort_outputs(path, {"image": data["image"]})[0]
    return float((logits.argmax(1) == data["labels"]).mean())


def relative_error(student: np.ndarray, teacher: np.ndarray) -> float:
    return float(((student - teacher) ** 2).sum() / (teacher**2).sum())


@pytest.fixture(scope="session")
def digits():
    return {"teacher": DIGITS / "teacher.onnx", "train": DIGITS / "train.npz", "val": DIGITS / "val.npz"}


@pytest.fixture(scope="session")
def digits_student(digits, tmp_path_factory) -> Path:
    """The digits teacher with half the channels of every prunable group cut (l1), not retrained."""
    path = tmp_path_factory.mktemp("digits") / "pruned.onnx"
    onnxkd.save(onnxkd.prune(digits["teacher"], 0.5).model, path)
    return path


@pytest.fixture(scope="session")
def small_digits(digits, tmp_path_factory) -> dict:
    """300 training and 100 validation digits: enough for a few fast steps in the robustness tests."""
    folder = tmp_path_factory.mktemp("small_digits")
    train, val = np.load(digits["train"]), np.load(digits["val"])
    np.savez(folder / "train.npz", image=train["image"][:300], labels=train["labels"][:300])
    np.savez(folder / "val.npz", image=val["image"][:100], labels=val["labels"][:100])
    return {"train": folder / "train.npz", "val": folder / "val.npz"}
