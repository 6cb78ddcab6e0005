"""Params, MACs and model stats against hand-computed values and the torch module's own layer shapes."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.metrics import count_macs, count_params, model_stats
from onnxkd.graph_passes.normalize.canonical import normalize
from onnxkd.model import save


def _weight(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def _model(nodes, inputs, outputs, initializers, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _input(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _output(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def test_grouped_conv():
    # X [2, 8, 10, 10], 16 filters over 8/2 = 4 channels each, 3x3, same padding -> Y [2, 16, 10, 10]
    model = _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, pads=[1, 1, 1, 1])],
        [_input("x", 2, 8, 10, 10)], [_output("y")], [_weight("w", 16, 4, 3, 3), _weight("b", 16)],
    )
    assert count_macs(model) == {"Conv": 2 * 16 * 10 * 10 * 4 * 3 * 3}
    assert count_params(model) == 16 * 4 * 9 + 16


def test_depthwise_conv_with_stride():
    # 6 channels, one filter each, stride 2 on 8x8 with pads 1 -> 4x4
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=6, strides=[2, 2], pads=[1, 1, 1, 1])],
        [_input("x", 1, 6, 8, 8)], [_output("y")], [_weight("w", 6, 1, 3, 3)],
    )
    assert count_macs(model) == {"Conv": 6 * 4 * 4 * 9}


def test_conv_transpose_with_stride_and_groups():
    # W [Cin=4, Cout/group=3, 2, 2], group 2 -> Cout 6; each of the 4*5*5 input positions scatters 3*2*2
    model = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], group=2)],
        [_input("x", "n", 4, 5, 5)], [_output("y")], [_weight("w", 4, 3, 2, 2)],
    )
    assert count_macs(model) == {"ConvTranspose": 1 * 4 * 5 * 5 * 3 * 2 * 2}
    assert count_macs(model, {"x": [3, 4, 5, 5]}) == {"ConvTranspose": 3 * 4 * 5 * 5 * 3 * 2 * 2}
    assert model_stats(model).input_shapes == {"x": [1, 4, 5, 5]}


def test_gemm_with_trans_b_and_trans_a():
    model = _model(
        [helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1),
         helper.make_node("Gemm", ["y", "d"], ["z"], transA=1)],
        [_input("a", "m", 7)], [_output("z")],
        [_weight("b", 3, 7), _weight("c", 3), _weight("d", 5, 2)],
    )
    # y = a @ b.T: [M, 7] x [7, 3]; z = y.T @ d: needs M == 5 -> [3, 2] with K = M
    assert count_macs(model, {"a": [5, 7]}) == {"Gemm": 5 * 3 * 7 + 3 * 2 * 5}
    assert count_params(model) == 21 + 3 + 10


def test_batched_and_broadcast_matmul():
    model = _model(
        [helper.make_node("MatMul", ["a", "b"], ["y"]), helper.make_node("MatMul", ["y", "v"], ["z"])],
        [_input("a", 2, 1, 4, 5), _input("b", 3, 5, 6)], [_output("z")], [_weight("v", 6)],
    )
    # [2,1,4,5] @ [3,5,6] -> [2,3,4,6], K 5; then @ [6] (1-D) -> [2,3,4], K 6
    assert count_macs(model) == {"MatMul": 2 * 3 * 4 * 6 * 5 + 2 * 3 * 4 * 6}


def test_recurrent_layers_count_every_step_gate_and_direction():
    # a bidirectional LSTM over [seq 9, batch 2, input 6], hidden 5: 2 directions x 4 gates x 5 units, each
    # reading 6 inputs and 5 hidden states per step; then a GRU (3 gates) with layout=1, [batch 2, seq 9, 10]
    model = _model(
        [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=5, direction="bidirectional"),
         helper.make_node("Transpose", ["y"], ["yt"], perm=[1, 0, 2, 3]),
         helper.make_node("Reshape", ["yt", "shape"], ["z"]),
         helper.make_node("GRU", ["z", "wg", "rg"], ["g"], hidden_size=4, layout=1)],
        [_input("x", 9, 2, 6)], [_output("g")],
        [_weight("w", 2, 20, 6), _weight("r", 2, 20, 5), numpy_helper.from_array(np.array([2, 9, 10], np.int64), "shape"),
         _weight("wg", 1, 12, 10), _weight("rg", 1, 12, 4)],
    )
    assert count_macs(model) == {"LSTM": 9 * 2 * 2 * 4 * 5 * (6 + 5), "GRU": 2 * 9 * 3 * 4 * (10 + 4)}


def test_einsum_counts_the_summed_over_letters():
    # Keras' EinsumDense as tf2onnx writes it: [B, S, 8] x [8, 2, 4] -> [B, S, 2, 4], summing over d;
    # then attention scores with an ellipsis: [..., 2, S, 4] x [..., 2, S, 4] -> [..., 2, S, S], over h
    model = _model(
        [helper.make_node("Einsum", ["x", "w"], ["q"], equation="bsd,dnh->bsnh"),
         helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1, 3]),
         helper.make_node("Einsum", ["qt", "qt"], ["scores"], equation="...nqh, ...nkh -> ...nqk")],
        [_input("x", 3, 5, 8)], [_output("scores")], [_weight("w", 8, 2, 4)],
    )
    assert count_macs(model) == {"Einsum": 3 * 5 * 2 * 4 * 8 + 3 * 2 * 5 * 5 * 4}
    # a single operand (a transpose) has no multiply-accumulates: not counted, and not unknown either
    alone = _model([helper.make_node("Einsum", ["x"], ["y"], equation="ij->ji")], [_input("x", 3, 4)],
                   [_output("y")], [])
    assert count_macs(alone) == {"Einsum": 0} and model_stats(alone).macs_unknown == []


def test_params_count_float_initializers_once():
    model = _model(
        [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Mul", ["s", "w"], ["t"]),
         helper.make_node("Reshape", ["t", "shape"], ["u"]), helper.make_node("Add", ["u", "h"], ["y"])],
        [_input("x", 4, 3)], [_output("y")],
        [_weight("w", 4, 3), numpy_helper.from_array(np.array([12], np.int64), "shape"),
         _weight("h", 12, dtype=np.float16)],
    )
    assert count_params(model) == 12 + 12  # w once though read twice; int64 shape not counted; fp16 counted


def test_unknown_input_name_is_a_user_error():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_input("x", 1)], [_output("y")], [])
    with pytest.raises(OnnxkdError, match="'images'"):
        count_macs(model, {"images": [1]})


def test_model_stats_of_a_file_with_external_data(zoo_model):
    path = zoo_model("resnet", "dynamo", external_data=True)
    stats = model_stats(path, {"input": [2, 3, 32, 32]})
    data = path.parent / (path.name + ".data")
    assert stats.size_bytes == path.stat().st_size + data.stat().st_size
    assert stats.node_count == len(onnx.load(str(path), load_external_data=False).graph.node)
    assert stats.op_histogram["Conv"] == 10 and list(stats.op_histogram)[0] == "Conv"
    assert stats.macs_total == sum(stats.macs_by_op.values()) and not stats.macs_unknown
    inline = model_stats(onnx.load(str(path)))
    assert inline.params == stats.params and inline.macs_total * 2 == stats.macs_total


def _torch_counts(name: str, batch: int) -> tuple[dict[str, int], object]:
    """MACs of Conv2d/ConvTranspose2d/Linear layers from forward hooks on the zoo's torch module."""
    import models
    import torch

    module = models.build(name)
    macs = {"Conv": 0, "ConvTranspose": 0, "Gemm": 0}

    def hook(layer, inputs, output):
        if isinstance(layer, torch.nn.Conv2d):
            macs["Conv"] += output.numel() * layer.in_channels // layer.groups * prod(layer.kernel_size)
        elif isinstance(layer, torch.nn.ConvTranspose2d):
            macs["ConvTranspose"] += inputs[0].numel() * layer.out_channels // layer.groups * prod(layer.kernel_size)
        elif isinstance(layer, torch.nn.Linear):
            macs["Gemm"] += output.numel() * layer.in_features

    for layer in module.modules():
        layer.register_forward_hook(hook)
    with torch.no_grad():
        module(models.ZOO[name].example_input(batch))
    return {op: n for op, n in macs.items() if n}, module


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_resnet_macs_and_params_match_the_torch_module(zoo_model, exporter):
    import torch

    path = zoo_model("resnet", exporter)
    for batch in (1, 2):
        expected, module = _torch_counts("resnet", batch)
        shapes = None if batch == 1 else {"input": [batch, 3, 32, 32]}  # batch 1 = the dynamic-dim default
        assert count_macs(path, shapes) == expected
    # The exporters fold each BatchNorm into the Conv before it: its scale and shift (2C) become one
    # Conv bias (C), and its running statistics disappear.
    bn_channels = sum(m.num_features for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch_params = sum(p.numel() for p in module.parameters())
    assert count_params(path) == torch_params - bn_channels


def test_densenet_params_include_batchnorm_running_statistics(zoo_model, tmp_path):
    """A BatchNorm that no Conv precedes stays a node: its running mean and var count as params."""
    import torch

    expected, module = _torch_counts("densenet", 1)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    torch_params = sum(p.numel() for p in module.parameters())
    path = zoo_model("densenet", "legacy")
    assert count_params(path) == torch_params + sum(2 * m.num_features for m in bns)
    normalized = save(normalize(path), tmp_path / "densenet.onnx")
    assert count_macs(normalized) == expected
    assert count_params(normalized) == count_params(path)


def test_unet_conv_transpose_macs_match_the_torch_module(zoo_model):
    expected, _ = _torch_counts("unet", 2)
    assert "ConvTranspose" in expected
    assert count_macs(zoo_model("unet", "dynamo"), {"input": [2, 3, 32, 32]}) == expected


def test_counting_and_pruning_leave_the_callers_model_unchanged():
    """count_macs once reordered the initializers of the ir.Model it was given (prune's summary passes the
    teacher through it): the serialised bytes must be identical afterwards."""
    from pathlib import Path

    import onnx_ir as ir

    import onnxkd
    from onnxkd.graph_passes.api import prune
    from onnxkd.graph_passes.metrics import count_macs, macs_by_node, model_stats

    model = onnxkd.load(Path(__file__).resolve().parents[2] / "examples" / "digits" / "teacher.onnx")
    before = ir.to_proto(model).SerializeToString()
    count_macs(model)
    macs_by_node(model, {"image": [1, 1, 8, 8]})
    model_stats(model)
    prune(model, 0.5)
    assert ir.to_proto(model).SerializeToString() == before


def test_nodes_sharing_a_name_are_each_counted():
    """onnx's checker accepts nodes with one name; MACs keyed by name counted the last one only (640 for a
    5.6M-MAC model) and prune printed a 2535x MACs ratio. Each conv: out * in * k * k * H * W."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="node"),
             helper.make_node("Relu", ["a"], ["r"], name="node"),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], name="node")]
    model = _model(nodes, [_input("x", 1, 3, 8, 8)], [_input("y", 1, 4, 8, 8)],
                   [_weight("w1", 6, 3, 3, 3), _weight("w2", 4, 6, 3, 3)])
    onnx.checker.check_model(model)
    assert sum(count_macs(model).values()) == 6 * 3 * 9 * 64 + 4 * 6 * 9 * 64
