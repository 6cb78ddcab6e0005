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
from onnxkd.torch_bridge.module import OnnxModule, _all_initializers, _fold_constants
from onnxkd.torch_bridge.program import tensor_from_ir


def write_back(module: OnnxModule, model: model_io.ModelLike, out_path: str | os.PathLike | None = None) -> ir.Model:
    """Return (and write to ``out_path`` atomically, if given) ``model`` carrying ``module``'s weights.

    ``model`` is not modified: a path is loaded afresh, an in-memory model is copied. An initializer
    whose value did not change keeps its original tensor object (bits, external-data reference).
    A model that kept its weights in an external file is written with an external file again.
    """
    if not hasattr(module, "onnx_tensors"):
        raise OnnxkdError(f"write_back: expected the module onnxkd.to_torch made, got {type(module).__name__}")
    target = _private_copy(model)
    initializers = _all_initializers(target.graph)
    external = any(isinstance(v.const_value, ir.ExternalTensor) for v in initializers.values())
    folded_originals = None
    for name, tensor in module.onnx_tensors():
        if not isinstance(tensor, torch.Tensor) or tensor.dtype not in dtypes.FLOAT_TYPES:
            continue  # integer/bool/string constants are never trained
        value = initializers.get(name)
        if value is None and name in module.folded:
            if folded_originals is None:
                tensors = {n: tensor_from_ir(v.const_value) for n, v in target.graph.initializers.items()}
                folded_originals = {n: t for n, (_, t) in _fold_constants(target.graph, tensors).items()}
                producers = {v.name: node for node in target.graph for v in node.outputs}
            _write_folded(target.graph, producers.get(name), name, tensor, folded_originals.get(name))
            continue
        if value is None:
            raise OnnxkdError(f"write_back: the model has no initializer {name!r}; is it the graph the module came from?")
        original = value.const_value
        if tuple(original.shape) != tuple(tensor.shape):
            raise OnnxkdError(
                f"write_back: initializer {name!r} has shape {tuple(original.shape)} in the model but {tuple(tensor.shape)} in the module"
            )
        data = tensor.detach().to(dtypes.to_torch_dtype(original.dtype))
        if _same_bits(tensor_from_ir(original), data):
            continue
        value.const_value = ir.Tensor(dtypes.torch_to_array(data, original.dtype), dtype=original.dtype, name=name)
    if out_path is not None:
        model_io.save(target, out_path, external_data=True if external else None)
    return target


def _write_folded(graph: ir.Graph, node: ir.Node | None, name: str, tensor: torch.Tensor, original: torch.Tensor | None) -> None:
    """A folded Constant/ConstantOfShape weight: if training changed it, the node becomes an initializer."""
    if node is None or original is None:
        raise OnnxkdError(f"write_back: the model has no constant node producing {name!r}; is it the graph the module came from?")
    data = tensor.detach().to(original.dtype)
    if tuple(original.shape) != tuple(data.shape):
        raise OnnxkdError(f"write_back: {name!r} has shape {tuple(original.shape)} in the model but {tuple(data.shape)} in the module")
    if _same_bits(original, data):
        return
    old_output = node.outputs[0]
    old_output.name = name + "__folded"
    data_type = dtypes.to_ir_dtype(data.dtype)
    new_value = ir.Value(
        name=name, shape=ir.Shape(list(data.shape)), type=ir.TensorType(data_type),
        const_value=ir.Tensor(dtypes.torch_to_array(data.cpu(), data_type), dtype=data_type, name=name),
    )
    graph.register_initializer(new_value)
    old_output.replace_all_uses_with(new_value, replace_graph_outputs=True)
    graph.remove(node, safe=True)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.dtype.itemsize]
    return torch.equal(a.cpu().contiguous().view(ints), b.cpu().contiguous().view(ints))


def _private_copy(model: model_io.ModelLike) -> ir.Model:
    if isinstance(model, ir.Model):
        return model_io.graph_copy(model)
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return ir.from_proto(copy)
    return model_io.load(model)
