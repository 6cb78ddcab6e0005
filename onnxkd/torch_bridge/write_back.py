"""Trained parameters (and BatchNormalization running statistics) back into the same ONNX graph.

Only initializer payloads change: names, dtypes (fp16/bf16 stay so), nodes, attributes and metadata
are left as they were. With no training in between, the written initializers are bit-identical.
"""

from __future__ import annotations

import os

import onnx
import onnx_ir as ir
import torch

from onnxkd import model as model_io
from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.module import OnnxModule, _all_initializers


def write_back(module: OnnxModule, model: model_io.ModelLike, out_path: str | os.PathLike | None = None) -> ir.Model:
    """Return (and write to ``out_path`` atomically, if given) ``model`` carrying ``module``'s weights.

    ``model`` is not modified: a path is loaded afresh, an in-memory model is copied.
    """
    target = _private_copy(model)
    initializers = _all_initializers(target.graph)
    for name, tensor in module.onnx_tensors():
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in dtypes.FLOAT_TYPES:
            continue  # integer/bool/string constants are never trained
        value = initializers.get(name)
        if value is None:
            raise OnnxkdError(f"write_back: the model has no initializer {name!r}; is it the graph the module came from?")
        original = value.const_value
        if tuple(original.shape) != tuple(tensor.shape):
            raise OnnxkdError(
                f"write_back: initializer {name!r} has shape {tuple(original.shape)} in the model but {tuple(tensor.shape)} in the module"
            )
        data = tensor.detach().to(dtypes.to_torch_dtype(original.dtype))
        value.const_value = ir.Tensor(dtypes.torch_to_array(data, original.dtype), dtype=original.dtype, name=name)
    if out_path is not None:
        model_io.save(target, out_path)
    return target


def _private_copy(model: model_io.ModelLike) -> ir.Model:
    if isinstance(model, ir.Model):
        return ir.from_proto(ir.to_proto(model))
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return ir.from_proto(copy)
    return model_io.load(model)
