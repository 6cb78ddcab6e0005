"""The torch bridge runs quantized zoo models as onnxruntime does: QDQ graphs written by onnxruntime's own
``quantize_static`` (per-channel, uint8 and int8 activations), compared with onnxruntime's fused int8 kernels
within one quantization step of the output (the node suite's QuantizeLinear/DequantizeLinear/QLinear* cases run
in tests/torch_bridge/test_conformance.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import onnxkd


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]):
        self.batches = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("name, activation", [("resnet", QuantType.QUInt8), ("resnet", QuantType.QInt8),
                                              ("mobilenetv2", QuantType.QUInt8), ("bert", QuantType.QUInt8)])
def test_bridge_equals_onnxruntime_on_quantized_zoo_models(zoo_model, tmp_path, name, activation):
    import models

    path = zoo_model(name)
    inputs = onnx.load(str(path)).graph.input[0].name
    batches = [models.ZOO[name].example_input(8).numpy() for _ in range(2)]
    out = tmp_path / f"{name}-int8.onnx"
    quantize_static(str(path), str(out), _Reader(inputs, batches), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=activation, weight_type=QuantType.QInt8)
    x = models.ZOO[name].example_input(8).numpy()
    expected = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {inputs: x})[0]
    with torch.no_grad():
        got = onnxkd.to_torch(out).eval()(torch.from_numpy(x))[0].numpy()
    graph = onnx.load(str(out)).graph
    last = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == graph.output[0].name)
    step = float(onnx.numpy_helper.to_array(next(t for t in graph.initializer if t.name == last.input[1])))
    assert np.abs(got - expected).max() <= step * 1.001
