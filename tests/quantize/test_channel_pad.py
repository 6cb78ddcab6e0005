"""Narrow convolution inputs padded to a multiple of 4 channels (onnxruntime's fast x86 int8 convolution).

Oracles: onnxruntime's outputs on the QDQ model as its own ``quantize_static`` wrote it, against the padded one;
the graph onnxruntime optimizes (the padded QLinearConv reads 4 channels); the bridge; injected clocks for the
rule that keeps the padding only where it is measured faster."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn

import onnxkd
from onnxkd.model import load
from onnxkd.quantize.channel_pad import SUFFIX, pad_input_channels, padded_convolutions
from onnxkd.quantize.trainable import to_qdq, to_trainable
from onnxkd.validate.latency import LatencyProtocol


class NearMisses(nn.Module):
    """An RGB stem (padded) and convolutions that must not be: aligned inputs, a depthwise one, too few outputs,
    outputs not a multiple of 8."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),  # the stem: 3 channels -> padded to 4
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),  # already a multiple of 4
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),  # depthwise
            nn.Conv2d(16, 6, 1), nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),  # 6 channels, but 8 outputs: under the kernel's 16
            nn.Conv2d(8, 6, 1), nn.ReLU(),
            nn.Conv2d(6, 20, 3, padding=1), nn.ReLU(),  # 6 channels, 20 outputs: not a multiple of 8
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(20, 10))

    def forward(self, x):
        return self.body(x)


class _Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.batches = iter([{"input": b} for b in batches])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    """NearMisses quantized by onnxruntime itself: uint8 activations, per-channel symmetric int8 weights."""
    folder = tmp_path_factory.mktemp("pad")
    torch.manual_seed(0)
    model = NearMisses().eval()
    float_path, out = folder / "near-misses.onnx", folder / "near-misses-int8.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(float_path), input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    # shapes inferred first, as quantize's preparation does: the QDQ model records the weights' shapes
    onnx.shape_inference.infer_shapes_path(str(float_path))
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    quantize_static(str(float_path), str(out), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _output_step(model: onnx.ModelProto) -> float:
    graph = model.graph
    last = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == graph.output[0].name)
    return float(onnx.numpy_helper.to_array(next(t for t in graph.initializer if t.name == last.input[1])))


def test_only_the_narrow_stem_is_padded_and_onnxruntime_computes_the_same(qdq, tmp_path):
    model = load(qdq)
    stem = next(node.name for node in model.graph if node.op_type == "Conv")
    assert pad_input_channels(model) == [stem]
    padded = onnxkd.model.to_proto(model)
    assert padded_convolutions(padded.graph.node) == [stem]
    onnx.shape_inference.infer_shapes(padded, strict_mode=True)  # the recorded shapes follow the padding
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    original = onnx.load(str(qdq))
    expected, got = _run(str(qdq), x), _run(padded, x)
    # the same integers in, the zero column adds nothing: at most a rounding apart (the kernels differ)
    assert np.abs(got - expected).max() <= _output_step(original) * 1.001
    assert np.mean(got == expected) > 0.95
    # onnxruntime fuses the padded stem into a QLinearConv that reads 4 channels
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxkd.save(model, tmp_path / "padded.onnx")
    ort.InferenceSession(str(tmp_path / "padded.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph
    weights = {t.name: tuple(t.dims) for t in optimized.initializer}
    convs = [n for n in optimized.node if n.op_type == "QLinearConv"]
    assert len(convs) == 7 and weights[convs[0].input[3]] == (16, 4, 3, 3)
    assert sorted(weights[c.input[3]][1] for c in convs) == [1, 4, 6, 6, 8, 16, 16]  # the rest as they were


def test_the_padded_channel_adds_no_parameter_and_no_mac(qdq, tmp_path):
    """The padding stores 16x1x3x3 zero weights (and reads the input's zero point), 16x16x16x9 MACs a sample at
    16x16: none of it may show; the unpadded QDQ model is the reference."""
    from onnxkd.commands.inspect import summary
    from onnxkd.graph_passes.metrics import count_macs, count_params

    model = load(qdq)
    params, macs = count_params(model), sum(count_macs(model, {"input": [1, 3, 16, 16]}).values())
    pad_input_channels(model)
    assert count_params(model) == params and sum(count_macs(model, {"input": [1, 3, 16, 16]}).values()) == macs
    assert summary(model)["parameters"] == summary(load(qdq))["parameters"]
    # what is padded is counted without that rule: 16 * 4 * 9 weights were stored for the stem
    stem = next(node for node in model.graph if node.op_type == "Conv")
    assert stem.inputs[1].producer().inputs[0].const_value.shape == (16, 4, 3, 3)


def test_the_bridge_runs_the_padded_model_and_its_trainable_graph_round_trips(qdq):
    model = load(qdq)
    pad_input_channels(model)
    padded = onnxkd.model.to_proto(model)
    x = np.random.default_rng(2).standard_normal((8, 3, 16, 16)).astype(np.float32)
    step = _output_step(padded)
    with torch.no_grad():
        bridged = onnxkd.to_torch(padded).eval()(torch.from_numpy(x))[0].numpy()
    assert np.abs(bridged - _run(padded, x)).max() <= step * 1.001
    trainable, record = to_trainable(padded, learn_scales=False)
    assert any(n.op_type == "Pad" and n.name.endswith(SUFFIX) for n in trainable.graph.node)
    back = to_qdq(trainable, record)
    assert np.array_equal(_run(back, x), _run(padded, x))


@pytest.mark.parametrize("padded_us, kept", [(200.0, True), (290.0, False)])
def test_padding_is_kept_only_where_the_profiler_says_faster_and_then_in_every_later_candidate(
        digits, tmp_path, padded_us, kept):
    """The digits CNN's first conv reads 1 channel: padded to 4 when the profiler times it (its Pad included)
    at most 1/1.05 of its unpadded 300 us (200 us: kept; 290 us: not), and the trim tried afterwards (the
    classifier slower in int8) is quantized padded too when the padding was kept."""
    first, classifier = "/features/features.0/features.0.0/Conv", "/classifier/Gemm"

    def padded(path) -> bool:
        return bool(padded_convolutions(onnx.load(str(path)).graph.node))

    def times_of(path):  # float: 100 us a node, the first conv 400 us; int8: 50 us, the classifier 300 us
        graph = onnx.load(str(path)).graph
        if not any(n.op_type == "QuantizeLinear" for n in graph.node):
            return {n.name: 400.0 if n.name == first else 100.0 for n in graph.node if n.op_type in ("Conv", "Gemm")}
        times = {n.name: 300.0 if n.name == classifier else 50.0 for n in graph.node if n.op_type in ("Conv", "Gemm")}
        if first in times:
            times[first] = padded_us if padded(path) else 300.0
        return times

    seen: list[bool] = []

    def clock(float_path, feeds, config, protocol, **options):
        def speedups_of(candidate):
            seen.append(padded(candidate))
            return {batch: 1.3 for batch in feeds}
        return speedups_of

    result = onnxkd.quantize(digits["teacher"], digits["val"], protocol=LatencyProtocol(warmup=1, runs=5),
                             speedups_of=clock, times_of=times_of)
    # timed: the whole model (padded or not), then the trial with the slow nodes in float, padded alike
    assert seen == [kept, kept]
    path = onnxkd.save(result.model, tmp_path / "int8.onnx")
    assert padded_convolutions(onnx.load(str(path)).graph.node) == ([first] if kept else [])
    assert result.padded_inputs == ([first] if kept else [])
    decision = next(trial for trial in result.trials["speed"] if "padded" in trial)
    assert decision == {"padded": [first], "profile_us": {"unpadded": 300.0, "padded": padded_us}, "kept": kept,
                        "scope": "all"}


def test_weights_with_a_zero_point_are_left_alone(qdq):
    """MLAS's indirect kernel takes symmetric weights only (zero points 0): asymmetric ones gain nothing."""
    model = load(qdq)
    stem = next(node for node in model.graph if node.op_type == "Conv")
    zero = stem.inputs[1].producer().inputs[2]
    zero.const_value = ir.tensor(np.ones(zero.const_value.shape, np.int8))
    assert pad_input_channels(model) == []


def test_an_input_quantized_per_channel_is_left_alone(qdq):
    """A per-channel activation scale would need a value for the new channel: not padded."""
    model = load(qdq)
    stem = next(node for node in model.graph if node.op_type == "Conv")
    scale = stem.inputs[0].producer().inputs[1]
    scale.const_value = ir.tensor(np.full(3, scale.const_value.numpy().item(), np.float32))
    assert pad_input_channels(model) == []
