"""What is quantized (ptq.SCOPES): every op onnxruntime can quantize, or only the weighted ones where that loses
more than the budget. A transformer's residual stream carries a few huge channels that its LayerNorms scale
away; one 8-bit range over that stream crushes every other channel. Oracle: onnxruntime's outputs of the float
and the written model on held-out inputs, and the written graph read back with onnx."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import onnx
import onnxruntime as ort
import torch
from torch import nn

from cli_runner import cli

import onnxkd
from onnxkd.quantize import speed


class ResidualStream(nn.Module):
    """A Linear, a residual-stream offset with one channel at 500, a LayerNorm whose gains ignore that channel and
    rescale the others to unit spread, a classifier: the float function hardly sees the outlier."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.head = nn.Linear(16, 64), nn.LayerNorm(64), nn.Linear(64, 10)
        offset = torch.zeros(64)
        offset[0] = 500.0
        self.register_buffer("offset", offset)
        with torch.no_grad():  # the stream's std is about 62 (the outlier), a channel's own spread about 0.6
            self.norm.weight.fill_(100.0)
            self.norm.bias.fill_(12.5)
            self.norm.weight[0], self.norm.bias[0] = 0.0, 0.0

    def forward(self, x):
        return self.head(self.norm(self.fc(x) + self.offset))


def _always_faster(float_path, feeds, config, protocol, **options):
    return lambda candidate: {batch: 2.0 for batch in feeds}


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("stream")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ResidualStream().eval(), (torch.randn(2, 16),), str(folder / "stream.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    np.savez(folder / "x.npz", x=np.random.default_rng(0).standard_normal((628, 16)).astype(np.float32))
    return folder


def test_an_outlier_in_the_residual_stream_leaves_all_but_the_weighted_ops_in_float(stream, tmp_path):
    path = stream / "stream.onnx"
    x = np.load(stream / "x.npz")["x"]
    profiled: list = []
    result = onnxkd.quantize(path, {"x": x}, speedups_of=_always_faster,
                             times_of=lambda p: profiled.append(p) or {}, max_accuracy_drop=0.05)
    assert len(profiled) == len(set(profiled))  # each model profiled once, the float one across both scopes
    assert result.int8 and result.scope == "weighted" and result.to_dict()["scope"] == "weighted"
    assert "every op quantized: int8 loses" in result.notes[0]
    assert {trial["scope"] for trial in result.trials["speed"]} == {"all", "weighted"}
    written = onnxkd.save(result.model, tmp_path / "int8.onnx")
    graph = onnx.load(str(written)).graph
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    norm = next(node for node in graph.node if node.op_type == "LayerNormalization")
    add = next(node for node in graph.node if node.op_type == "Add")
    assert add.output[0] not in quantized and norm.input[0] == add.output[0]  # the stream stays float
    assert sum(node.op_type == "DequantizeLinear" and node.input[0].endswith("weight_quantized")
               for node in graph.node) == 2  # both Gemms run on int8 weights
    held = np.random.default_rng(1).standard_normal((1000, 16)).astype(np.float32)

    def classes(model_path):
        return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(
            None, {"x": held})[0].argmax(1)

    assert np.mean(classes(written) == classes(path)) >= 0.95


def test_a_scope_given_is_the_only_one_tried(stream, tmp_path, capsys, monkeypatch):
    forced = onnxkd.quantize(stream / "stream.onnx", stream / "x.npz", speedups_of=_always_faster,
                             times_of=lambda p: {}, max_accuracy_drop=0.05, scope="all")
    assert not forced.int8 and forced.scope is None  # every op quantized loses too much: the float model
    assert {trial["scope"] for trial in forced.trials["speed"]} == {"all"}
    monkeypatch.setattr(speed, "onnxruntime_speedups", _always_faster)
    code, stdout, _ = cli(capsys, "quantize", str(stream / "stream.onnx"), "--data", str(stream / "x.npz"), "-o",
                          str(tmp_path / "int8.onnx"), "--scope", "weighted", "--max-accuracy-drop", "0.05", "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["int8"] and summary["scope"] == "weighted"
    assert {trial["scope"] for trial in summary["trials"]["speed"]} == {"weighted"}
    code, _, stderr = cli(capsys, "quantize", str(stream / "stream.onnx"), "--data", str(stream / "x.npz"), "-o",
                          str(tmp_path / "other.onnx"), "--scope", "convs")
    assert code == 2 and stderr.count("Error:") == 1 and not (tmp_path / "other.onnx").exists()
