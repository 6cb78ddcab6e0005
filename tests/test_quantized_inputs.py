"""A model that is already quantized (here by onnxruntime's own quantize_static) cannot be pruned or
distilled: prune, distill and compress refuse it with one line saying what to give instead, exit 2, nothing
written (compress measured its channels first and failed with 'no float initializers to score')."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import cli
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

import onnxkd


class _Reader(CalibrationDataReader):
    def __init__(self, images):
        self.batches = iter([{"image": images[i:i + 16]} for i in range(0, len(images), 16)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def int8_teacher(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "int8.onnx"
    quantize_static(str(digits["teacher"]), str(path), _Reader(np.load(digits["val"])["image"][:64]),
                    quant_format=QuantFormat.QDQ)
    return path


@pytest.mark.parametrize("command", ["compress", "prune", "distill-teacher", "distill-student"])
def test_a_quantized_model_is_refused_with_what_to_give_instead(int8_teacher, digits, tmp_path, capsys, command):
    out = tmp_path / "out.onnx"
    args = {"compress": ["compress", str(int8_teacher), "--ratio", "0.5", "--data", str(digits["val"]), "-o", str(out)],
            "prune": ["prune", str(int8_teacher), "--ratio", "0.5", "--criterion", "kd", "--data", str(digits["val"]),
                      "-o", str(out)],
            "distill-teacher": ["distill", str(int8_teacher), str(digits["teacher"]), "--data", str(digits["val"]),
                                "-o", str(out)],
            "distill-student": ["distill", str(digits["teacher"]), str(int8_teacher), "--data", str(digits["val"]),
                                "-o", str(out)]}[command]
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{int8_teacher} is already quantized (" in err and "float" in err
    assert list(tmp_path.iterdir()) == []


def test_the_python_prune_refuses_it_too(int8_teacher):
    with pytest.raises(onnxkd.OnnxkdError, match="already quantized .*prune and distil its float original"):
        onnxkd.prune(int8_teacher, 0.5)
