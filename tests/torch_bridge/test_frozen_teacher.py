"""A frozen module (distillation's teacher) runs on the model's own weights: a large teacher's weights file,
mapped into memory, is not copied into the process (on a 269 MB MLP, distill's peak RSS fell by 262 MB)."""

from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnxruntime as ort
import torch

import onnxkd
from onnxkd.torch_bridge import to_torch


def test_a_frozen_module_reads_the_weights_file_in_place_and_runs_as_onnxruntime(digits, tmp_path):
    path = tmp_path / "t.onnx"  # every weight in t.onnx.data, as torch's default export writes large ones
    onnx.save_model(onnx.load(str(digits["teacher"])), str(path), save_as_external_data=True,
                    location="t.onnx.data", size_threshold=0)
    model = onnxkd.load(path)
    frozen = to_torch(model, frozen=True)
    weights = {name: value.const_value.numpy() for name, value in model.graph.initializers.items()
               if value.const_value.numpy().ndim > 1}
    assert weights and all(frozen.parameter(name).data_ptr() == array.ctypes.data for name, array in weights.items())
    assert not any(p.requires_grad for p in frozen.parameters())
    x = np.load(digits["val"])["image"][:16]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        got = frozen(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    copied = to_torch(model)  # the default: weights of its own, to train
    assert all(copied.parameter(name).data_ptr() != array.ctypes.data for name, array in weights.items())


def test_a_frozen_module_refuses_train_mode_and_takes_numpy_inputs(digits):
    """Train mode on a frozen module updated the model's BatchNorm statistics in place (write_back then shipped
    them); numpy inputs, as onnxruntime takes them, failed inside the first op."""
    frozen = to_torch(digits["teacher"], frozen=True)
    with pytest.raises(onnxkd.OnnxkdError, match="frozen=True"):
        frozen.train()
    assert not frozen.training
    frozen.eval()  # eval stays allowed
    x = np.load(digits["val"])["image"][:4]
    with torch.no_grad():
        torch.testing.assert_close(frozen(x)[0], frozen(torch.from_numpy(x))[0])
        with pytest.raises(onnxkd.OnnxkdError, match="no tensor named nowhere"):
            frozen(x, capture=["nowhere"])
