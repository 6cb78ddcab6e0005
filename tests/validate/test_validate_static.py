"""Params, MACs, node histogram and channels per layer against hand arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_onnx import classifier

from onnxkd.validate import static


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_classifier_params_and_macs_by_hand():
    model, _ = classifier(8, 16)
    # conv1 8*3*3*3 + 8, conv2 16*8*3*3 + 16, fc 10*16 + 10
    assert static.count_params(model) == 216 + 8 + 1152 + 16 + 160 + 10
    macs = static.count_macs(model, {"x": (2, 3, 8, 8)})
    conv1 = 2 * 8 * 8 * 8 * (3 * 3 * 3)  # N * Cout * H*W * Cin*k*k
    conv2 = 2 * 16 * 4 * 4 * (8 * 3 * 3)  # stride 2 halves H and W
    assert macs["by_op"] == {"Conv": conv1 + conv2, "Gemm": 2 * 10 * 16}
    assert macs["total"] == conv1 + conv2 + 320 and macs["unknown_nodes"] == []


def test_grouped_conv_conv_transpose_gemm_trans_a_and_batched_matmul():
    inits = {
        "wg": np.zeros((8, 2, 3, 3), np.float32),  # group 4: Cin/group = 2
        "wt": np.zeros((8, 4, 2, 2), np.float32),  # ConvTranspose [Cin, Cout/group, k, k]
        "wm": np.zeros((5, 7), np.float32),
        "wa": np.zeros((6, 3), np.float16),
        "steps": np.array([1, 2], np.int64),  # not a float: not a parameter
    }
    nodes = [
        helper.make_node("Conv", ["x", "wg"], ["g"], name="grouped", group=4, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["g", "wt"], ["t"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MatMul", ["seq", "wm"], ["m"], name="mm"),
        helper.make_node("Gemm", ["a", "wa"], ["ga"], name="gemm_t", transA=1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 5, 5]),
         helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["B", 2, 4, 5]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT16, [6, 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("t", "m")]
        + [helper.make_tensor_value_info("ga", TensorProto.FLOAT16, None)],
        inits,
    )
    macs = static.count_macs(model, {"x": (1, 8, 5, 5), "seq": (3, 2, 4, 5)})
    assert macs["by_op"] == {
        "Conv": 1 * 8 * 25 * (2 * 9),
        "ConvTranspose": 1 * 8 * 25 * (4 * 4),  # every input pixel scatters into Cout/group * k*k outputs
        "MatMul": 3 * 2 * 4 * 7 * 5,  # batch dims * M * N * K
        "Gemm": 2 * 3 * 6,  # A^T is [2, 6]: M=2, K=6, N=3
    }
    assert static.count_params(model) == 8 * 2 * 9 + 8 * 4 * 4 + 35 + 18
    layers = static.channels_per_layer(model)
    assert {k: v["channels"] for k, v in layers.items()} == {"grouped": 8, "up": 4, "mm": 7, "gemm_t": 3}


def test_unknown_shapes_are_reported_not_guessed():
    # b comes out of an op shape inference knows nothing about, so the MatMul cannot be counted
    nodes = [helper.make_node("Opaque", ["a"], ["b"], domain="custom"), helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    macs = static.count_macs(model, {"a": (1, 4)})
    assert macs["total"] == 0 and macs["unknown_nodes"] == ["mm"]


def test_histogram_and_channels_kept():
    teacher, _ = classifier(8, 16)
    student, _ = classifier(4, 8)
    assert static.op_histogram(teacher) == {"Conv": 2, "Relu": 2, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1}
    assert static.node_count(teacher) == 7
    rows = static.compare_channels(static.channels_per_layer(teacher), static.channels_per_layer(student))
    assert [(r["layer"], r["teacher"], r["student"], r["kept"]) for r in rows] == [
        ("conv1", 8, 4, 0.5), ("conv2", 16, 8, 0.5), ("fc", 10, 10, 1.0)]


def test_constant_node_weights_count_as_params():
    w = numpy_helper.from_array(np.zeros((3, 4), np.float32), "w")
    model = _model([helper.make_node("Constant", [], ["w"], value=w), helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {})
    assert static.count_params(model) == 12
    assert static.count_macs(model, {"x": (2, 3)})["by_op"] == {"MatMul": 2 * 4 * 3}


def test_resnet50_macs_match_the_published_figure():
    """ResNet-50 at 224x224 is quoted at 4.1 GMACs (He et al. 2016: 3.8 GFLOPs counting conv only, plus the fc)."""
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    if not path.exists():
        pytest.skip("onnx backend test data not installed")
    macs = static.count_macs(onnx.load(path), {"gpu_0/data_0": (1, 3, 224, 224)})
    assert macs["unknown_nodes"] == []
    assert macs["by_op"]["Gemm"] == 2048 * 1000
    assert 4.05e9 < macs["total"] < 4.15e9
