"""An ``onnx.backend`` Backend that runs models through the torch bridge (used by the conformance suite)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from onnx.backend.base import Backend, BackendRep

from onnxkd.torch_bridge.module import OnnxModule, to_torch


def _to_torch_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_to_torch_value(v) for v in value]
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "SU":
        return array  # string tensors stay numpy; only string ops read them
    if array.dtype.name == "bfloat16":  # ml_dtypes: numpy has no native bfloat16, torch does
        return torch.from_numpy(np.array(array.view(np.int16), copy=True)).view(torch.bfloat16)
    if array.dtype.name.startswith("float8"):  # ml_dtypes float8: same bits, torch dtype of the same name
        return torch.from_numpy(np.array(array.view(np.uint8), copy=True)).view(getattr(torch, array.dtype.name))
    return torch.from_numpy(np.array(array, copy=True))


def _to_numpy_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_to_numpy_value(v) for v in value]
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16 or (value.dtype.is_floating_point and value.dtype.itemsize == 1):
            import ml_dtypes  # the reference outputs carry these exact dtypes

            bits = value.detach().cpu().view(torch.int16 if value.dtype.itemsize == 2 else torch.uint8).numpy()
            return bits.view(getattr(ml_dtypes, str(value.dtype).removeprefix("torch.")))
        return value.detach().cpu().numpy()
    return np.asarray(value)


class TorchBridgeRep(BackendRep):
    def __init__(self, module: OnnxModule):
        self.module = module.eval()

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, dict):
            inputs = [inputs[name] for name in self.module.input_names]
        tensors = [_to_torch_value(x) for x in inputs]
        with torch.no_grad():
            outputs = self.module(*tensors)
        return tuple(_to_numpy_value(y) for y in outputs)


class TorchBridgeBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TorchBridgeRep:
        return TorchBridgeRep(to_torch(model))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")
