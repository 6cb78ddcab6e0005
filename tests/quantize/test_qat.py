"""Quantization-aware distillation: fake-quant in the bridge against torch's own LSQ fake-quant, the trainable
graph's round trip against onnxruntime, and accuracy regained on a model whose PTQ loses points (onnxruntime on
the 580 held-out digits, which neither calibration nor training saw)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_runner import cli
from outliers import outlier_digits

import onnxkd
from onnxkd.quantize.trainable import to_qdq, to_trainable
from onnxkd.torch_bridge.ops.misc import dequantize_linear, quantize_linear

TRAINING = SimpleNamespace(training=True)


def _accuracy(path, val) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(np.mean(session.run(None, {"image": val["image"]})[0].argmax(1) == val["labels"]))


@pytest.fixture(scope="module")
def val(digits):
    data = np.load(digits["val"])
    return {"image": data["image"], "labels": data["labels"]}


@pytest.mark.parametrize("dtype, zero", [(torch.uint8, 3), (torch.int8, 0)])
def test_fake_quant_equals_torch_lsq_values_and_gradients(dtype, zero):
    """Q -> DQ in training mode gives torch's learnable fake-quant: the same values, the same straight-through
    gradient for x (zero where saturated) and the same LSQ gradient for the scale."""
    low, high = (0, 255) if dtype == torch.uint8 else (-128, 127)
    x = (torch.randn(200, dtype=torch.float64) * 3).float().requires_grad_()
    scale = torch.tensor(0.02, requires_grad=True)
    point = torch.tensor(zero, dtype=dtype)
    ours = dequantize_linear(TRAINING, quantize_linear(TRAINING, x, scale, point), scale, point)
    ours.pow(2).sum().backward()
    x_ours, s_ours = x.grad.clone(), scale.grad.clone()
    x.grad, scale.grad = None, None
    theirs = torch._fake_quantize_learnable_per_tensor_affine(x, scale.reshape(1), torch.tensor([float(zero)]),
                                                              low, high, 1.0)
    theirs.pow(2).sum().backward()
    assert torch.equal(ours, theirs)
    assert torch.allclose(x_ours, x.grad, rtol=1e-6, atol=1e-6)  # the order of float operations differs
    assert torch.equal(x_ours == 0, x.grad == 0) and (x_ours == 0).sum() > 10  # zero exactly where saturated
    assert torch.allclose(s_ours, scale.grad.reshape(()), rtol=1e-4)


def test_the_trainable_graph_round_trips_to_the_same_int8_model(digits, tmp_path):
    result = onnxkd.quantize(digits["teacher"], digits["val"], speedups_of=lambda *a: lambda c: {1: 2.0, 8: 2.0},
                             times_of=lambda p: {})
    qdq = onnxkd.model.to_proto(result.model)
    frozen, record = to_trainable(qdq, learn_scales=False)
    assert record.to_dict() == {"weights": 6, "biases": 6, "learned_scales": 0}
    back = to_qdq(frozen, record)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in back.graph.initializer}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # learned scales pass through exp(log(s)): onnxruntime's outputs stay within one step of the output's scale
    learned, record = to_trainable(qdq, learn_scales=True)
    x = np.load(digits["val"])["image"][:64]
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    step = float(before[next(n for n in qdq.graph.node if n.output[0] == "logits").input[1]])
    assert np.abs(run(to_qdq(learned, record)) - run(qdq)).max() <= step * 1.001
    # and the bridge runs the trainable graph as onnxruntime runs the int8 one, within one step
    with torch.no_grad():
        bridged = onnxkd.to_torch(learned).eval()(torch.from_numpy(x))[0].numpy()
    assert np.abs(bridged - run(qdq)).max() <= step * 1.001


def test_qad_regains_the_accuracy_ptq_loses(digits, val, tmp_path, capsys):
    """The digits CNN with an outlier channel (x200): plain PTQ loses >= 1 point on the held-out digits; --qat
    distils the int8 model from the float one and keeps every node int8."""
    model = outlier_digits(digits["teacher"], tmp_path / "outlier.onnx", 200.0)
    common = ["--data", str(digits["train"]), "--json", "--eval-samples", "300"]
    code, out, err = cli(capsys, "quantize", str(model), *common, "--max-accuracy-drop", "1", "-o",
                         str(tmp_path / "ptq.onnx"))
    assert code == 0, err
    ptq_summary = json.loads(out)
    code, out, err = cli(capsys, "quantize", str(model), *common, "--qat", "--epochs", "4", "--device", "cpu",
                         "--max-accuracy-drop", "0.005", "-o", str(tmp_path / "qat.onnx"))
    assert code == 0, err
    summary = json.loads(out)
    float_accuracy = _accuracy(model, val)
    ptq, qat = _accuracy(tmp_path / "ptq.onnx", val), _accuracy(tmp_path / "qat.onnx", val)
    assert float_accuracy - ptq >= 0.01
    assert qat >= ptq + 0.02, (float_accuracy, ptq, qat)
    # no node went back to float for accuracy (on the real clock the trim may leave one slower in int8 in float)
    assert summary["qat"]["kept"] and summary["quantized_nodes"] == 6 - len(summary["float_nodes"])
    assert all(why.startswith("speed:") for why in summary["float_nodes"].values())
    assert summary["qat"]["qat"]["drop"] < summary["qat"]["ptq"]["drop"]
    # what was written is the QDQ graph again: int8 weights, int32 biases, no training nodes left
    graph = onnx.load(str(tmp_path / "qat.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "Exp" or "_qat_" in n.name]
    float_convs = sum(n.op_type == "Conv" and n.name in summary["float_nodes"] for n in graph.node)
    assert sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer) == 5 - float_convs
    int32 = lambda g: sorted(t.name for t in g.initializer if t.data_type == onnx.TensorProto.INT32)  # noqa: E731
    if set(ptq_summary["float_nodes"]) == set(summary["float_nodes"]):  # the two runs' trims (real clock) agree
        assert int32(graph) == int32(onnx.load(str(tmp_path / "ptq.onnx")).graph)  # the biases and zero points
    # whatever the trim kept float: every int8 compute node reads its bias as an int32 tensor, dequantized
    producer = {out: n for n in graph.node for out in n.output}
    int32_tensors = set(int32(graph))
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and node.name not in summary["float_nodes"]:
            bias = producer[node.input[2]]
            assert bias.op_type == "DequantizeLinear" and bias.input[0] in int32_tensors, node.name


def test_a_bad_device_for_qad_is_refused_before_any_work(digits, tmp_path, capsys):
    """Checked only when QAD started (after calibration and timing), or never where PTQ was within budget."""
    out = tmp_path / "int8.onnx"
    code, _, err = cli(capsys, "quantize", str(digits["teacher"]), "--data", str(digits["val"]), "--qat",
                       "--device", "tpu", "-o", str(out))
    assert code == 2 and err.strip() == "Error: --device 'tpu': expected auto, cpu, cuda or cuda:N", err
    assert not out.exists()
