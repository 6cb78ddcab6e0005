"""Fold layout-only ops on constants (Reshape/Transpose/Squeeze/Unsqueeze/Flatten/Identity of a weight).

Caffe2 exports reshape a classifier's 4-D weight before Gemm; folders with size limits leave such
views in place, and a weight behind a node cannot be sliced. These ops only move elements, so
folding them is exact whatever the size.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return data.reshape(target)


def _fold(node: ir.Node, values: list) -> np.ndarray | None:
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    data = values[0]
    op = node.op_type
    if op == "Identity":
        return data
    if op == "Reshape" and len(values) > 1:
        return _reshape(data, values[1], attrs.get("allowzero", 0))
    if op == "Transpose":
        return np.transpose(data, attrs.get("perm"))
    if op == "Flatten":
        axis = attrs.get("axis", 1) % max(data.ndim, 1)
        return data.reshape(int(np.prod(data.shape[:axis])), -1)
    if op in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes", values[1].tolist() if len(values) > 1 and values[1] is not None else None)
        if op == "Squeeze":
            return np.squeeze(data, axis=None if axes is None else tuple(axes))
        if axes is None:
            return None
        out = data
        for axis in sorted(a % (data.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, axis)
        return out
    return None


class FoldConstantViewsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type not in ("Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"):
                continue
            if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1 or node.outputs[0].is_graph_output():
                continue
            inputs = [v for v in node.inputs if v is not None]
            if not inputs or any(not v.is_initializer() or v.const_value is None for v in inputs):
                continue
            folded = _fold(node, [v.const_value.numpy() for v in node.inputs if v is not None])
            if folded is None:
                continue
            out = node.outputs[0]
            name = f"{out.name}__folded"
            while name in graph.initializers:
                name += "_"
            value = ir.Value(name=name, shape=ir.Shape(folded.shape), type=ir.TensorType(inputs[0].dtype),
                             const_value=ir.Tensor(np.ascontiguousarray(folded), name=name))
            graph.register_initializer(value)
            out.replace_all_uses_with(value)
            graph.remove(node, safe=True)
            for source in inputs:
                if not source.uses() and not source.is_graph_output() and not source.is_graph_input():
                    graph.initializers.pop(source.name, None)
            modified = True
        return ir.passes.PassResult(model, modified)
