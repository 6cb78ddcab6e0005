"""Quantized models' figures (int8 MACs, params) against MACs measured on the float model with onnxruntime.

The int8 models are what ``onnxruntime.quantization`` writes: QDQ and QOperator (QLinearConv, com.microsoft
QGemm/QLinearAdd, ...) from ``quantize_static``, and MatMulInteger from ``quantize_dynamic``. The oracle knows
which float nodes were quantized because the test chose them (an excluded node, an op type left out), and
takes each node's MACs from the tensor shapes onnxruntime produces when it runs the float model.
"""

from __future__ import annotations

import json
from math import prod

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

from onnxkd.cli import cli
from onnxkd.commands.inspect import inspect_model
from onnxkd.graph_passes import metrics
from onnxkd.validate.api import validate

FAST = ["--runs", "5", "--warmup", "1", "--time-budget", "0.2"]
IMAGE = {"input": [1, 3, 32, 32]}
TOKENS = {"input_ids": [1, 12]}


class _Random(CalibrationDataReader):
    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def _feeds(shapes: dict[str, list[int]], n: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    if "input_ids" in shapes:
        return [{"input_ids": rng.integers(0, 50, shapes["input_ids"]).astype(np.int64)} for _ in range(n)]
    return [{"input": rng.standard_normal(shapes["input"]).astype(np.float32)} for _ in range(n)]


def _measured_macs(path, shapes: dict[str, list[int]]) -> dict[str, tuple[str, int]]:
    """Node name -> (op type, MACs) of the float model's Conv/Gemm/MatMul nodes, from the shapes of the tensors
    onnxruntime computes (every MAC node's inputs and output made graph outputs). A MatMul of two activations
    (attention's) is "MatMul x MatMul"."""
    model = onnx.load(str(path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    seen = {o.name for o in model.graph.output}
    for name in [x for n in nodes for x in (*n.input[:2], n.output[0])]:
        if name not in weights and name not in seen:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
            seen.add(name)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, _feeds(shapes, 1)[0])))
    shape = {**weights, **{k: list(v.shape) for k, v in values.items()}}
    result = {}
    for n in nodes:
        a, b, y = shape[n.input[0]], shape[n.input[1]], shape[n.output[0]]
        attrs = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        if n.op_type == "Conv":  # every output element sums Cin/group * kernel products
            macs = prod(y) * prod(b[1:])
        elif n.op_type == "Gemm":
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            macs = m * k * (b[0] if attrs.get("transB") else b[1])
        else:
            macs = prod(y) * a[-1]
        result[n.name] = ("MatMul x MatMul" if n.op_type == "MatMul" and n.input[1] not in weights else n.op_type, macs)
    return result


def _float_params(path) -> int:
    """Elements of the float model's float initializers and float Constant nodes (where the legacy exporter
    leaves a few)."""
    graph = onnx.load(str(path)).graph
    constants = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(prod(t.dims) for t in [*graph.initializer, *constants] if t.data_type == TensorProto.FLOAT)


@pytest.fixture(scope="module")
def cnn(zoo_model, tmp_path_factory):
    """The zoo ResNet in float, and as QDQ and QOperator int8 models with one Conv left in float."""
    folder = tmp_path_factory.mktemp("int8_cnn")
    path = zoo_model("resnet")
    measured = _measured_macs(path, IMAGE)
    excluded = next(name for name, (op, _) in measured.items() if op == "Conv" and "layer2" in name)
    quantized = {}
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        quantized[fmt.name] = folder / f"resnet-{fmt.name}.onnx"
        quantize_static(str(path), str(quantized[fmt.name]), _Random(_feeds(IMAGE)), quant_format=fmt,
                        per_channel=True, nodes_to_exclude=[excluded])
    return {"float": path, "measured": measured, "excluded": excluded, **quantized}


@pytest.fixture(scope="module")
def transformer(zoo_model, tmp_path_factory):
    """The zoo BERT with its MatMuls in int8 and its classifier Gemm left in float: QDQ and QOperator (attention's
    activation x activation MatMuls too), and dynamic (MatMulInteger)."""
    folder = tmp_path_factory.mktemp("int8_bert")
    path = zoo_model("bert")
    quantized = {}
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        quantized[fmt.name] = folder / f"bert-{fmt.name}.onnx"
        quantize_static(str(path), str(quantized[fmt.name]), _Random(_feeds(TOKENS)), quant_format=fmt,
                        per_channel=True, op_types_to_quantize=["MatMul"])
    quantized["dynamic"] = folder / "bert-dynamic.onnx"
    quantize_dynamic(str(path), str(quantized["dynamic"]), op_types_to_quantize=["MatMul"])
    return {"float": path, "measured": _measured_macs(path, TOKENS), **quantized}


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_cnn_int8_macs_are_the_quantized_convs(cnn, fmt):
    measured = cnn["measured"]
    summary = metrics.mac_summary(cnn[fmt], IMAGE)
    assert summary["unknown_nodes"] == []
    assert summary["total"] == sum(macs for _, macs in measured.values())
    assert summary["int8"] == summary["total"] - measured[cnn["excluded"]][1] > 0
    assert metrics.count_params(cnn[fmt]) == _float_params(cnn["float"])  # int8 weights + int32 biases
    if fmt == "QOperator":  # the integer ops and com.microsoft QGemm, counted through QLinearAdd and the pool
        assert set(summary["int8_by_op"]) == {"QLinearConv", "com.microsoft::QGemm"}
    assert metrics.mac_summary(cnn["float"], IMAGE)["int8"] == 0


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator", "dynamic"])
def test_transformer_int8_macs_are_the_matmuls(transformer, fmt):
    measured = transformer["measured"]
    summary = metrics.mac_summary(transformer[fmt], TOKENS)
    assert summary["unknown_nodes"] == []
    assert summary["total"] == sum(macs for _, macs in measured.values())
    # quantize_dynamic leaves activation x activation MatMuls in float, and rewrites the Gemm as a MatMul first
    quantized = ("MatMul", "Gemm") if fmt == "dynamic" else ("MatMul", "MatMul x MatMul")
    assert summary["int8"] == sum(macs for op, macs in measured.values() if op in quantized)
    int8_op = {"QDQ": "MatMul", "QOperator": "QLinearMatMul", "dynamic": "MatMulInteger"}[fmt]
    assert summary["int8_by_op"] == {int8_op: summary["int8"]}
    assert metrics.count_params(transformer[fmt]) == _float_params(transformer["float"])


def test_scales_and_zero_points_are_not_parameters():
    """A per-channel DequantizeLinear: the int8 weight counts, its [4] scale and [4] zero point do not, and
    a uint8 tensor nothing quantized reads (a lookup table) counts as a weight like a float one."""
    w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w_q")
    scale = numpy_helper.from_array(np.full(4, 0.1, np.float32), "w_scale")
    zero = numpy_helper.from_array(np.zeros(4, np.int8), "w_zero")
    table = numpy_helper.from_array(np.arange(10, dtype=np.uint8), "table")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"]),
             helper.make_node("Gather", ["table", "ids"], ["t"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                                           helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("t", TensorProto.UINT8, None)], [w, scale, zero, table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert metrics.count_params(model) == 4 * 2 * 9 + 10
    # x is float: the Conv reads one dequantized operand only, so none of its MACs are int8
    assert metrics.mac_summary(model) == {"total": 4 * 9 * 2 * 9, "int8": 0, "by_op": {"Conv": 4 * 9 * 2 * 9},
                                          "int8_by_op": {}, "unknown_nodes": [],
                                          "input_shapes": {"x": [1, 2, 5, 5], "ids": [3]}}


def _contrib_conv(channels_last: int, x_shape: list[int]) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w"),
             numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "zu"),
             numpy_helper.from_array(np.int8(0), "zi")]
    conv = helper.make_node("QLinearConv", ["x", "s", "zu", "w", "s", "zi", "s", "zu"], ["y"], domain="com.microsoft",
                            name="conv", channels_last=channels_last)
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])


def test_a_channels_last_contrib_conv_is_unknown_not_guessed():
    """com.microsoft QLinearConv: onnx does not know it; in NCHW it has Conv's shape rule, in NHWC its own layout."""
    assert metrics.mac_summary(_contrib_conv(1, [1, 5, 5, 2]))["unknown_nodes"] == ["conv"]
    nchw = metrics.mac_summary(_contrib_conv(0, [1, 2, 5, 5]))  # y [1, 4, 3, 3], each of Cin * 3 * 3 products
    assert nchw["total"] == nchw["int8"] == 4 * 3 * 3 * (2 * 9) and nchw["unknown_nodes"] == []


def test_validate_cli_reports_the_students_int8_macs(cnn, tmp_path):
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=x)
    result = CliRunner().invoke(cli, ["validate", str(cnn["float"]), str(cnn["QDQ"]), "--data", str(tmp_path / "data.npz"),
                                      "--report", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    total = sum(macs for _, macs in cnn["measured"].values())
    assert r["teacher"]["macs_int8"] == 0 and r["teacher"]["macs"] == r["student"]["macs"] == total
    assert r["student"]["macs_int8"] == total - cnn["measured"][cnn["excluded"]][1]
    assert r["student"]["params"] == r["teacher"]["params"]
    assert all(c["kept"] == 1 for c in r["channels"])  # each Conv found behind its DequantizeLinear
    assert "| int8 MACs | 0 |" in (tmp_path / "out" / "report.md").read_text()
    assert "int8 MACs" in result.output and "int8 MACs" in (tmp_path / "out" / "report.html").read_text()


def test_float_reports_have_no_int8_row(models, tmp_path):
    result = CliRunner().invoke(cli, ["validate", str(models["teacher"]), str(models["student"]),
                                      "--report", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 0, result.output
    assert "int8" not in (tmp_path / "out" / "report.md").read_text() and "int8" not in result.output


def test_validate_a_qoperator_student(cnn):
    """QLinearConv, com.microsoft ops and int8 initializers go through the sessions, the quality metrics and
    the channel matching (onnxruntime's "_quant" node names)."""
    r = validate(cnn["float"], cnn["QOperator"], runs=5, warmup=1, budget_s=0.2)
    assert r.student.macs == r.teacher.macs and 0 < r.student.macs_int8 < r.student.macs and r.teacher.macs_int8 == 0
    assert r.speedup["macs_reduction"] == 1 and all(c["kept"] == 1 for c in r.channels)


def test_inspect_shows_int8_macs(cnn, capsys):
    summary = inspect_model(str(cnn["QOperator"]))["summary"]
    assert summary["macs_int8"] == metrics.mac_summary(cnn["QOperator"])["int8"] > 0
    assert summary["parameters"] == inspect_model(str(cnn["float"]))["summary"]["parameters"]
    assert inspect_model(str(cnn["float"]))["summary"]["macs_int8"] == 0
    result = CliRunner().invoke(cli, ["inspect", str(cnn["QDQ"])])
    assert result.exit_code == 0 and "int8 MACs" in result.output
