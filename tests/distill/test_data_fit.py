"""A model whose export fixed a traced size in a Reshape, given data of another size: one line (exit 2), as
validate says it, where distill and prune --criterion kd raised torch's RuntimeError (an internal error)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxkd
from onnxkd.distill.data_fit import first_run_on_data
from onnxkd.torch_bridge import to_torch


def _baked_length(path):
    """x [N, T, 4] -> Reshape to [-1, 8, 2] (T = 4 baked in) -> Flatten -> Gemm: runs at T = 4 only."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
         helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)], "baked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.array([-1, 8, 2], np.int64), "shape"),
         numpy_helper.from_array(np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_data_of_another_size_is_refused_in_one_line(tmp_path):
    teacher = _baked_length(tmp_path / "t.onnx")
    x = np.random.default_rng(1).normal(size=(16, 3, 4)).astype(np.float32)  # T = 3
    with pytest.raises(onnxkd.OnnxkdError, match=r"the teacher does not run on the data's samples \(x \[3, 4\]\): "
                                                 r"onnxruntime fails too .*Reshape"):
        onnxkd.distill(teacher, teacher, {"x": x}, epochs=1)
    fitting = np.random.default_rng(1).normal(size=(16, 4, 4)).astype(np.float32)
    assert onnxkd.distill(teacher, teacher, {"x": fitting}, epochs=1).model is not None  # T = 4 runs


def test_where_onnxruntime_runs_the_samples_the_bridge_failure_is_raised_as_it_is(tmp_path):
    teacher = _baked_length(tmp_path / "t.onnx")
    module = to_torch(teacher)
    inputs = [torch.zeros(2, 4, 4)]

    def bridge_bug():
        raise RuntimeError("a bridge bug")

    with pytest.raises(RuntimeError, match="a bridge bug"):
        first_run_on_data(module, onnxkd.load(teacher), inputs, "the teacher", bridge_bug)
