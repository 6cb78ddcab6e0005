"""``onnxkd compress --int8``: prune -> distill -> optimize -> quantize -> validate against the original teacher,
with the recipe replaying the quantize stage. Oracles: onnx (the written graph is QDQ), onnxruntime (the int8
student runs; its accuracy recomputed here), the report's figures against each other."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import cli

FAST = ["--epochs", "1", "--batch-size", "32", "--criterion", "l1", "--validate-batch-size", "8"]


@pytest.fixture
def workspace(digits, tmp_path):
    shutil.copy(digits["teacher"], tmp_path / "teacher.onnx")
    shutil.copy(digits["train"], tmp_path / "train.npz")
    shutil.copy(digits["val"], tmp_path / "val.npz")
    return tmp_path


def test_compress_int8_writes_an_int8_student_validated_against_the_teacher(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    code, out, err = cli(capsys, "compress", "teacher.onnx", "--ratio", "0.3", "--data", "train.npz", "--val-data",
                         "val.npz", *FAST, "--int8", "--no-qat", "-o", "student.onnx", "--report", "report", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert all(f"Warning: {warning}" in err for warning in r["warnings"])  # --json still logs them, on stderr
    q = r["compress"]["quantize"]
    assert [s["name"] for s in r["compress"]["stages"]] == ["prune", "distill", "optimize", "quantize", "validate"]
    assert sorted(p.name for p in workspace.iterdir()) == ["report", "student.onnx", "student.recipe.json",
                                                          "teacher.onnx", "train.npz", "val.npz"]
    graph = onnx.load(str(workspace / "student.onnx")).graph
    quantized = any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert quantized == q["int8"]
    if q["int8"]:  # this machine's int8 paid on the digits CNN in every run so far; the rule decides, not the test
        assert r["teacher"]["macs_int8"] == 0
        # the trim may leave a node slower in int8 in float: a convolution's or a Gemm's MACs are then float ones (a
        # pool or an Add left float has none)
        weighted = {n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
        if set(q["float_nodes"]) & weighted:
            assert 0 < r["student"]["macs_int8"] < r["student"]["macs"]
        else:
            assert r["student"]["macs_int8"] == r["student"]["macs"] > 0
    else:
        assert q["notes"]
    # validation compared the written student with the original teacher: its accuracy, recomputed here
    val = np.load(workspace / "val.npz")
    session = ort.InferenceSession(str(workspace / "student.onnx"), providers=["CPUExecutionProvider"])
    accuracy = float(np.mean(session.run(None, {"image": val["image"]})[0].argmax(1) == val["labels"]))
    assert r["accuracy"]["student"] == pytest.approx(accuracy)
    assert "int8 student" in (workspace / "report" / "report.md").read_text()
    recipe = json.loads((workspace / "student.recipe.json").read_text())
    assert recipe["quantize"]["enabled"] is True and recipe["quantize"]["qat"] is False

    # the recipe replays the run: the same stages, int8 again
    code, out, err = cli(capsys, "compress", "teacher.onnx", "--data", "train.npz", "--val-data", "val.npz",
                         "--recipe", "student.recipe.json", "-o", "again.onnx", "--report", "again", "--json")
    assert code == 0, err
    assert [s["name"] for s in json.loads(out)["compress"]["stages"]] == [
        "prune", "distill", "optimize", "quantize", "validate"]
