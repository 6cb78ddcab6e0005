"""MACs of exports whose shapes need folding to be known, and what a report says when they stay unknown."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxkd

FAST = {"runs": 3, "warmup": 1, "budget_s": 0.1}


def test_a_legacy_reflection_pad_export_has_its_macs_counted(tmp_path):
    """torch's TorchScript export computes ReflectionPad2d's pads through a Transpose; shape folding stopped there, so
    every convolution after the pad was left uncounted (the teacher counted 0 MACs)."""
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3)).eval()
    path = tmp_path / "pad.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    data = {"x": np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)}
    result = onnxkd.validate(path, path, data, **FAST)
    assert not result.teacher.macs_unknown_nodes
    assert result.teacher.macs == 8 * 16 * 16 * 3 * 3 * 3  # Cout * output pixels * Cin * kernel, batch 1


def test_macs_uncounted_in_one_model_give_no_ratio(tmp_path):
    """A teacher whose pads come out of an op the folding does not evaluate counts 0 MACs; its pruned student,
    normalised, counts them all. The ratio read "0.00x fewer MACs"; it is now left out, with the warning."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64) * -1, "negative_pads"),
             numpy_helper.from_array(rng.normal(size=(16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 16, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Abs", ["negative_pads"], ["pads"]), helper.make_node("Pad", ["x", "pads"], ["padded"]),
             helper.make_node("Conv", ["padded", "w1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])], inits)
    teacher = tmp_path / "teacher.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(teacher))
    student = tmp_path / "student.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5, round_to=1).model, student)
    result = onnxkd.validate(teacher, student, **FAST)
    assert result.teacher.macs_unknown_nodes and result.student.macs > 0 and not result.student.macs_unknown_nodes
    assert result.speedup["macs_reduction"] is None
    assert any("MACs of 2 node(s) of the teacher" in w for w in result.warnings)
