"""Dims written as -1 (paddle2onnx's way to say "dynamic"): inspect, prune, validate and compress treat them
as dynamic (they printed negative MACs, and validate crashed with an IndexError on a batch limit of -1)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from cli_runner import run_cli

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


@pytest.fixture(scope="module")
def paddle_style(tmp_path_factory) -> Path:
    """The digits teacher with its batch dims written as dim_value -1."""
    model = onnx.load(str(DIGITS / "teacher.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = -1
    path = tmp_path_factory.mktemp("paddle") / "teacher.onnx"
    onnx.save(model, str(path))
    return path


def test_inspect_prune_validate_compress_on_minus_one_dims(paddle_style, tmp_path):
    inspect = run_cli("inspect", paddle_style, "--json")
    assert inspect.returncode == 0, inspect.stderr
    summary = json.loads(inspect.stdout)["summary"]
    assert summary["macs"] == 7_097_600 and summary["inputs"][0]["shape"][0] == "?"

    pruned = tmp_path / "pruned.onnx"
    prune = run_cli("prune", paddle_style, "--ratio", "0.5", "-o", pruned, "--json")
    assert prune.returncode == 0, prune.stderr
    figures = json.loads(prune.stdout)["summary"]
    assert 0 < figures["macs_after"] < figures["macs_before"]

    validate = run_cli("validate", paddle_style, pruned, "--data", DIGITS / "val.npz", "--runs", "5",
                       "--report", tmp_path / "report")
    assert validate.returncode == 0, validate.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["accuracy"]["n"] == 360 and report["speedup"]["batched"]["batch_size"] == 8

    compress = run_cli("compress", paddle_style, "--data", DIGITS / "train.npz", "--epochs", "1",
                       "-o", tmp_path / "student.onnx", "--report", tmp_path / "compress")
    assert compress.returncode == 0, compress.stderr
    onnx.checker.check_model(str(tmp_path / "student.onnx"), full_check=True)
