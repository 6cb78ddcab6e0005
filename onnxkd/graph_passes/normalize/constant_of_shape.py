"""Fold ConstantOfShape nodes with a constant shape into initializers.

Old exporters (the ONNX-zoo "light" models, Caffe2) store every weight as ConstantOfShape(shape); each
must become an initializer to be a weight at all. numpy builds them directly, so onnxsim neither has to
fold hundreds of MB nor ship them between processes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

# Beyond this a filled tensor is more likely a runtime buffer than a weight; onnxsim's default threshold.
MAX_FOLD_BYTES = 1536 * 2**20


class FoldConstantOfShapePass(ir.passes.InPlacePass):
    """Replace ``ConstantOfShape(constant shape)`` by an initializer named like its output."""

    def __init__(self, max_bytes: int = MAX_FOLD_BYTES):
        super().__init__()
        self.max_bytes = max_bytes
        self.folded = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.folded = 0
        graph = model.graph
        for node in list(graph):
            if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
                continue
            output = node.outputs[0]
            shape = _constant(node.inputs[0])
            if shape is None or output.is_graph_output():
                continue
            fill = _fill_value(node)
            if int(np.prod(shape)) * fill.dtype.itemsize > self.max_bytes:
                continue
            array = np.full(tuple(int(d) for d in shape), fill, dtype=fill.dtype)
            tensor = ir.tensor(array, name=output.name)
            initializer = ir.Value(
                name=output.name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
            )
            graph.register_initializer(initializer)
            output.replace_all_uses_with(initializer)
            graph.remove(node, safe=True)
            self.folded += 1
        return ir.passes.PassResult(model, modified=self.folded > 0)


def _fill_value(node: ir.Node) -> np.ndarray:
    """The one-element fill as a 0-d array (ONNX default: float32 zero)."""
    attribute = node.attributes.get("value")
    if attribute is None:
        return np.zeros((), np.float32)
    return attribute.as_tensor().numpy().reshape(())


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].as_tensor().numpy()
    return None
