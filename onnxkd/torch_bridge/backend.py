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
    return torch.from_numpy(np.array(array, copy=True))


def _to_numpy_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_to_numpy_value(v) for v in value]
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            return value.float().numpy()
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
