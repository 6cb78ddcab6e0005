"""The dynamo exporter's as_strided Flatten of a channels_last model (a Gather reading a flattened tensor back in
its own order) becomes the tensor, so the last convolution's channels can be cut; checked with onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import assert_close, prune_and_check, run
from torch import nn

from onnxkd.graph_passes.api import channel_groups
from onnxkd.graph_passes.normalize.strided_gathers import StridedGathersPass
from onnxkd.model import load


@pytest.fixture(scope="module")
def channels_last_cnn(tmp_path_factory):
    """A CNN moved to torch.channels_last, exported by the dynamo exporter with a dynamic batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    model = model.to(memory_format=torch.channels_last)
    example = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    path = tmp_path_factory.mktemp("channels-last") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["image"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert "Gather" in [n.op_type for n in onnx.load(str(path)).graph.node]  # the as_strided this is about
    return path


def test_a_channels_last_flatten_no_longer_freezes_the_last_convolution(channels_last_cnn):
    _, groups = channel_groups(channels_last_cnn)
    assert [(g.size, g.prunable) for g in groups] == [(16, True), (32, True), (10, False)], \
        [(g.source, g.size, g.frozen) for g in groups]
    feeds = {"image": np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)}
    prune_and_check(channels_last_cnn, [feeds])
    assert_close(run(channel_groups(channels_last_cnn)[0], feeds), run(load(channels_last_cnn), feeds))


def _flat_gather(offsets: list[int]) -> onnx.ModelProto:
    """x [B, 4, 1, 1] flattened and gathered back at Range(B) * 4 + offsets, as as_strided writes it."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["data"]),
             helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
             helper.make_node("Squeeze", ["batch"], ["b"]),
             helper.make_node("Range", ["zero", "b", "one"], ["rows"]),
             helper.make_node("Mul", ["rows", "four"], ["starts"]),
             helper.make_node("Unsqueeze", ["starts", "axes"], ["starts4"]),
             helper.make_node("Add", ["starts4", "offsets"], ["indices"]),
             helper.make_node("Gather", ["data", "indices"], ["g"], axis=0),
             helper.make_node("Relu", ["g"], ["out"])]
    constants = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in [
        ("flat", [-1]), ("zero", 0), ("one", 1), ("four", 4), ("axes", [1, 2, 3]),
        ("offsets", np.array(offsets).reshape(1, 4, 1, 1))]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4, 1, 1])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 4, 1, 1])], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("offsets, replaced", [([0, 1, 2, 3], True), ([3, 2, 1, 0], False), ([0, 1, 2, 2], False)])
def test_only_a_gather_in_the_tensors_own_order_is_replaced(offsets, replaced):
    proto = _flat_gather(offsets)
    model = ir.serde.deserialize_model(proto)
    assert StridedGathersPass()(model).modified == replaced
    assert ("Gather" not in [n.op_type for n in model.graph]) == replaced
    feeds = {"x": np.random.default_rng(0).standard_normal((5, 4, 1, 1)).astype(np.float32)}
    assert_close(run(model, feeds), run(proto, feeds))
