"""Give every equal-parts Split an explicit sizes input, so that pruning can make the parts unequal."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxkd.model import opset_of


class ExplicitSplitSizesPass(ir.passes.InPlacePass):
    """Split(x) with no sizes (``num_outputs`` or implicit) -> Split(x, sizes) where the axis size is known."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if opset_of(model) < 13:
            return ir.passes.PassResult(model, False)
        modified = False
        for node in model.graph:
            if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.inputs) > 1 and node.inputs[1] is not None:
                continue
            shape = node.inputs[0].shape
            axis_attr = node.attributes.get("axis")
            axis = axis_attr.value if axis_attr is not None else 0
            parts = len(node.outputs)
            if shape is None or not isinstance(shape[axis], int) or shape[axis] % parts:
                continue
            sizes = np.full(parts, shape[axis] // parts, dtype=np.int64)
            name = f"{node.name or node.outputs[0].name}__split_sizes"
            while name in model.graph.initializers:
                name += "_"
            value = ir.Value(name=name, shape=ir.Shape([parts]), type=ir.TensorType(ir.DataType.INT64),
                             const_value=ir.Tensor(sizes, name=name))
            model.graph.register_initializer(value)
            if len(node.inputs) < 2:
                node.resize_inputs(2)
            node.replace_input_with(1, value)
            node.attributes.pop("num_outputs", None)
            modified = True
        return ir.passes.PassResult(model, modified)
