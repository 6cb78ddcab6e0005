"""Bad data and flags: one `Error:` line, exit 2, no traceback, nothing written, inputs untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from onnxkd.cli import main
from onnxkd.model import sha256_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402


def _run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", *map(str, args)])
    return exit_info.value.code, capsys.readouterr().err


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def case(digits, digits_student, tmp_path):
    images = np.load(digits["train"])["image"][:40]
    labels = np.load(digits["train"])["labels"][:40]
    return {"teacher": digits["teacher"], "student": digits_student, "out": tmp_path / "out.onnx",
            "images": images, "labels": labels, "tmp": tmp_path}


def _data_cases(c):
    bad_nan = c["images"].copy()
    bad_nan[0, 0, 0, 0] = np.nan
    return {
        "unknown input": (dict(image=c["images"], pixels=c["images"]), "unknown input name 'pixels'"),
        "wrong shape": (dict(image=c["images"][:, :, :4]), "dim 2 is 4"),
        "wrong rank": (dict(image=c["images"][:, 0]), "rank 3"),
        "non-numeric": (dict(image=c["images"].astype(str)), "non-numeric"),
        "label count": (dict(image=c["images"], labels=c["labels"][:10]), "10 labels for 40 samples"),
        "NaN values": (dict(image=bad_nan), "NaN/Inf"),
        "class id too large": (dict(image=c["images"], labels=c["labels"] + 10), "class id .* >= the 10 scores"),
    }


@pytest.mark.parametrize("name", ["unknown input", "wrong shape", "wrong rank", "non-numeric", "label count",
                                  "NaN values", "class id too large"])
def test_bad_data_is_refused_before_training(case, capsys, name):
    arrays, message = _data_cases(case)[name]
    data = _npz(case["tmp"] / "data.npz", **arrays)
    before = sha256_file(case["teacher"]), sha256_file(case["student"])
    code, err = _run(capsys, case["teacher"], case["student"], "--data", data, "-o", case["out"])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and __import__("re").search(message, lines[0]), err
    assert not case["out"].exists() and not (case["tmp"] / "out.onnx.work").exists()
    assert (sha256_file(case["teacher"]), sha256_file(case["student"])) == before


def test_bad_flags_and_pairs(case, capsys, tmp_path):
    data = _npz(tmp_path / "d.npz", image=case["images"], labels=case["labels"])
    other = models.export("resnet", tmp_path, "legacy")
    teacher, student, out = case["teacher"], case["student"], case["out"]
    checks = [
        # other names are paired by position, and then the shapes must still fit
        ((teacher, other, "--data", data, "-o", out), "input 'image' \\(the student's 'input'\\): dim 1 is 1 in the "
                                                      "teacher, 3 in the student"),
        ((teacher, student, "--data", data, "-o", out, "--epochs", 2, "--steps", 5), "--epochs and --steps"),
        ((teacher, student, "--data", data, "-o", out, "--loss", "huber"), "--loss 'huber'"),
        ((teacher, student, "--data", data, "-o", out, "--loss", "nope=mse"), "unknown output 'nope'"),
        ((teacher, student, "--data", data, "-o", out, "--hint", "no_such_tensor"), "no tensor of that name"),
        ((teacher, student, "--data", data, "-o", teacher), "output path is the teacher"),
        ((teacher, student, "--data", data, "-o", data), "output path is the data"),
        ((teacher, student, "--data", data, "-o", tmp_path / "missing" / "s.onnx"), "does not exist"),
        ((teacher, student, "--data", data, "-o", out, "--resume"), "no checkpoint"),
        ((teacher, student, "--data", tmp_path / "nope.npz", "-o", out), "no such file"),
        ((teacher, tmp_path / "nope.onnx", "--data", data, "-o", out), "student: .*no such file"),
        ((teacher, student, "--data", data, "-o", out, "--output-weight", "logits"), "OUTPUT=WEIGHT"),
    ]
    if not __import__("torch").cuda.is_available():
        checks.append(((teacher, student, "--data", data, "-o", out, "--device", "cuda"), "CUDA is not available"))
    for args, message in checks:
        code, err = _run(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), (args, err)
        assert __import__("re").search(message, lines[0]), (message, err)
        assert not out.exists()
