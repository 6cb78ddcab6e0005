"""Float16 and bfloat16 models computed in float32 where they are trained.

A model exported for a GPU is often float16 throughout (its weights, its Casts, often its inputs and outputs)
or float16 inside float32 inputs and outputs (onnxruntime's float16 converter with keep_io_types). Trained as
it is, AdamW's updates underflow and its losses overflow (the digits CNN in float16: NaN within 20 steps), and
on a CPU torch's half-precision convolutions are some 20x slower. So for training and scoring the bridge runs
a copy whose half-precision weights, Casts and constants are float32 (its half inputs are cast on entry);
``write_back`` rounds the trained weights back into the original graph's own dtypes, by name, so the student
stays a float16 model.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

HALF = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def has_half(model: ir.Model) -> bool:
    """Whether any initializer, Cast or graph input of the main graph is float16 or bfloat16."""
    graph = model.graph
    return (any(v.dtype in HALF for v in graph.initializers.values())
            or any(v.dtype in HALF for v in graph.inputs)
            or any(node.op_type == "Cast" and node.attributes.get_int("to", 0) in HALF for node in graph))


def in_float32(model: ir.Model) -> ir.Model:
    """``model`` itself without half precision; else a copy computing in float32 with the same initializer
    names (so ``write_back`` targets the original graph)."""
    if not has_half(model):
        return model
    from onnxkd import model as model_io

    copy = model_io.copy_via_proto(model)
    graph = copy.graph
    for value in graph.initializers.values():
        if value.dtype in HALF and value.const_value is not None:
            array = value.const_value.numpy().astype(np.float32)
            value.const_value = ir.Tensor(array, name=value.name)
            value.dtype = ir.DataType.FLOAT
    for node in graph.all_nodes():
        _promote_attributes(node)
        for value in node.outputs:
            if value.dtype in HALF:
                value.dtype = ir.DataType.FLOAT
    for value in list(graph.inputs):
        if value.dtype in HALF:  # the data stay half (they are cast to the declared type); compute starts float32
            users = list(value.uses())  # before the Cast, which reads it too
            cast = ir.Node("", "Cast", [value], [ir.AttrInt64("to", ir.DataType.FLOAT)], name=f"{value.name}__float32")
            graph.insert_before(next(iter(graph)), cast)
            for use in users:
                use.node.replace_input_with(use.idx, cast.outputs[0])
            cast.outputs[0].name, cast.outputs[0].dtype = f"{value.name}__float32", ir.DataType.FLOAT
    return copy


def _promote_attributes(node: ir.Node) -> None:
    """Casts to half precision cast to float32; half constants become float32 ones."""
    if node.op_type == "Cast" and node.attributes.get_int("to", 0) in HALF:
        node.attributes["to"] = ir.AttrInt64("to", ir.DataType.FLOAT)
    value = node.attributes.get("value")  # Constant, ConstantOfShape
    if value is not None and value.type == ir.AttributeType.TENSOR and value.value.dtype in HALF:
        node.attributes["value"] = ir.AttrTensor("value", ir.Tensor(value.value.numpy().astype(np.float32)))
