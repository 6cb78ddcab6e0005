"""Fold layout-only ops on constants (Reshape/Transpose/Squeeze/Unsqueeze/Flatten/Identity/Split/Slice/Concat of a
weight).

Caffe2 exports reshape a classifier's 4-D weight before Gemm; the dynamo exporter splits
nn.MultiheadAttention's packed in-projection into q/k/v weights in the graph, and reorders nn.LSTM's gates
(torch's i, f, g, o to ONNX's i, o, f, c) with Slices and a Concat; folders with size limits leave such views in
place, and a weight behind a node cannot be sliced. These ops only move elements, so folding them is exact
whatever the size.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return data.reshape(target)


def _split(node: ir.Node, values: list, attrs: dict) -> list[np.ndarray] | None:
    data, axis = values[0], attrs.get("axis", 0)
    sizes = values[1] if len(values) > 1 and values[1] is not None else attrs.get("split")
    if sizes is None:
        parts = len(node.outputs)
        if data.shape[axis] % parts:
            return None
        sizes = [data.shape[axis] // parts] * parts
    bounds = np.cumsum([int(v) for v in sizes])[:-1]
    return np.split(data, bounds, axis=axis)


def _slice(data: np.ndarray, values: list) -> np.ndarray:
    """Slice (opset 10+): starts, ends, and optional axes and steps as inputs; numpy clamps the bounds alike."""
    starts, ends = values[1], values[2]
    axes = values[3] if len(values) > 3 and values[3] is not None else range(len(starts))
    steps = values[4] if len(values) > 4 and values[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[int(axis) % data.ndim] = slice(int(start), int(end), int(step))
    return data[tuple(index)]


def _fold(node: ir.Node, values: list) -> list[np.ndarray] | None:
    """The node's outputs computed from constant inputs, or None when it is not a pure view."""
    attrs = {name: attr.value for name, attr in node.attributes.items()}
    if node.op_type == "Split":
        return _split(node, values, attrs)
    single = _fold_single(node, values, attrs)
    return None if single is None else [single]


def _fold_single(node: ir.Node, values: list, attrs: dict) -> np.ndarray | None:
    data = values[0]
    op = node.op_type
    if op == "Identity":
        return data
    if op == "Reshape" and len(values) > 1:
        return _reshape(data, values[1], attrs.get("allowzero", 0))
    if op == "Transpose":
        return np.transpose(data, attrs.get("perm"))
    if op == "Concat":
        return np.concatenate(values, axis=attrs.get("axis", 0))
    if op == "Slice" and len(values) >= 3:
        return _slice(data, values)
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


VIEWS = ("Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "Concat")


class FoldConstantViewsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type not in VIEWS:
                continue
            if node.domain not in ("", "ai.onnx") or any(out.is_graph_output() for out in node.outputs):
                continue
            inputs = [v for v in node.inputs if v is not None]
            if not inputs or any(not v.is_initializer() or v.const_value is None for v in inputs):
                continue
            folded = _fold(node, [v.const_value.numpy() if v is not None else None for v in node.inputs])
            if folded is None or len(folded) != len(node.outputs):
                continue
            for out, array in zip(node.outputs, folded):
                name = f"{out.name}__folded"
                while name in graph.initializers:
                    name += "_"
                value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(inputs[0].dtype),
                                 const_value=ir.Tensor(np.ascontiguousarray(array), name=name))
                graph.register_initializer(value)
                out.replace_all_uses_with(value)
            graph.remove(node, safe=True)
            for source in inputs:
                if not source.uses() and not source.is_graph_output() and not source.is_graph_input():
                    graph.initializers.pop(source.name, None)
            modified = True
        return ir.passes.PassResult(model, modified)
