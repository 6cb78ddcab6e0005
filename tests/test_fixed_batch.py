"""Models exported for batch 1 (the ONNX zoo's, many converters'): their graphs bake the batch into shape
constants, so the torch bridge runs other batch sizes in chunks of the declared batch. Distillation and kd
scoring feed batches of their own size: before, `compress` on such a model died with an internal error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import run_cli
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxkd

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


def _baked_batch_model() -> onnx.ModelProto:
    """Conv -> Reshape to the constant [1, 48] -> Gemm, declared for batch 1."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 48], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((48, 5)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_bridge_runs_a_baked_batch_in_chunks_like_onnxruntime_per_sample():
    model = _baked_batch_model()
    module = onnxkd.to_torch(model)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))  # 3 samples for a batch-1 graph
    (y,), captured = module(x, capture=["r"])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1].numpy()})[0] for i in range(3)])
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert captured["r"].shape == (3, 3, 4, 4)
    # gradients: the chunked batch gives the sum of the per-sample gradients
    y.sum().backward()
    chunked = module.params["w"].grad.clone()
    module.zero_grad()
    for i in range(3):
        module(x[i:i + 1])[0].sum().backward()
    torch.testing.assert_close(chunked, module.params["w"].grad)


@pytest.fixture(scope="module")
def batch_one_teacher(tmp_path_factory) -> Path:
    """The digits teacher as a converter writes it for batch 1: dims of 1, a Reshape to [1, C] for the Flatten."""
    model = onnx.load(str(DIGITS / "teacher.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    width = next(i for i in model.graph.initializer if i.name == gemm.input[1]).dims[1]
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, width], np.int64), "batch_one_shape"))
    reshape = helper.make_node("Reshape", [flatten.input[0], "batch_one_shape"], list(flatten.output), name="/Reshape")
    index = list(model.graph.node).index(flatten)
    model.graph.node.remove(flatten)
    model.graph.node.insert(index, reshape)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("batch_one") / "teacher.onnx"
    onnx.save(model, str(path))
    return path


def _compress_and_validate(teacher: Path, folder: Path) -> dict:
    folder.mkdir()
    student = folder / "student.onnx"
    compress = run_cli("compress", teacher, "--data", DIGITS / "train.npz", "--epochs", "1", "-o", student,
                       "--report", folder / "report")
    assert compress.returncode == 0, compress.stderr
    onnx.checker.check_model(str(student), full_check=True)
    validate = run_cli("validate", teacher, student, "--data", DIGITS / "val.npz", "--runs", "5",
                       "--report", folder / "validate")
    assert validate.returncode == 0, validate.stderr
    return json.loads((folder / "validate" / "report.json").read_text())["accuracy"]


def test_compress_a_model_exported_for_batch_one(batch_one_teacher, tmp_path):
    """The same run as on the teacher with a free batch dim, the same student quality (the chunks' gradients
    add up to the whole batch's): measured by onnxruntime on the validation set."""
    fixed = _compress_and_validate(batch_one_teacher, tmp_path / "fixed")
    free = _compress_and_validate(DIGITS / "teacher.onnx", tmp_path / "free")
    assert fixed["n"] == free["n"] == 360
    assert abs(fixed["student"] - free["student"]) <= 0.03, (fixed, free)
