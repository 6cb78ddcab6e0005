"""Selects from a packed projection become slices of it (nn.MultiheadAttention's q, k, v).

torch writes a packed in-projection as P = x @ W (3*E outputs), then
``P.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2).squeeze(-2)`` and q, k, v = proj[0], proj[1],
proj[2]: Reshape -> Unsqueeze -> Transpose -> Squeeze -> Gather(i). The selected tensor is exactly
``P[..., i*E:(i+1)*E]``, but along the way q, k and v share one axis of size 3 that no channel layout can
carry (which of the three a channel belongs to depends on the index). Rewriting each select as that Slice
lets the analysis split the packed projection into its three parts, whose heads are then cut like
separate projections'. The pass proves the equality by following every axis of P through the chain.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

_VIEWS = ("Unsqueeze", "Squeeze", "Transpose")


class PackedSelectsToSlicesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "Gather" or node.domain not in ("", "ai.onnx"):
                continue
            found = _packed_select(node)
            if found is None:
                continue
            packed, start, stop = found
            slice_node = _slice(graph, node, packed, start, stop)
            name = node.outputs[0].name
            node.outputs[0].replace_all_uses_with(slice_node.outputs[0], replace_graph_outputs=True)
            graph.remove(node, safe=True)
            slice_node.outputs[0].name = name  # the tensor keeps its name: hints still find it in the teacher
            modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _packed_select(gather: ir.Node) -> tuple[ir.Value, int, int] | None:
    """(P, start, stop) when ``gather`` selects P[..., start:stop] through a Reshape/view chain, else None."""
    index = gather.inputs[1].const_value if len(gather.inputs) > 1 and gather.inputs[1] is not None else None
    if index is None or index.size != 1 or len(index.shape) != 0:
        return None
    chain = []
    value = gather.inputs[0]
    while value is not None and value.producer() is not None and value.producer().op_type in _VIEWS:
        chain.append(value.producer())
        value = value.producer().inputs[0]
    reshape = value.producer() if value is not None else None
    if reshape is None or reshape.op_type != "Reshape" or not chain:
        return None
    packed = reshape.inputs[0]
    p_shape, r_shape = _static(packed), _static(reshape.outputs[0])
    if p_shape is None or r_shape is None or len(r_shape) != len(p_shape) + 1:
        return None
    parts, width = r_shape[-2], r_shape[-1]
    if not isinstance(parts, int) or not isinstance(width, int) or p_shape[-1] != parts * width:
        return None
    labels: list = [("lead", j) for j in range(len(p_shape) - 1)] + ["packed", "width"]
    for view in reversed(chain):
        labels = _through(view, labels)
        if labels is None:
            return None
    axis = gather.attributes["axis"].value if "axis" in gather.attributes else 0
    axis %= len(labels)
    i = int(index.numpy().reshape(-1)[0])
    if labels[axis] != "packed" or not 0 <= i < parts:
        return None
    rest = labels[:axis] + labels[axis + 1:]
    if rest != [("lead", j) for j in range(len(p_shape) - 1)] + ["width"]:
        return None
    return packed, i * width, (i + 1) * width


def _through(view: ir.Node, labels: list) -> list | None:
    """The axis labels after one view op; unit axes are labelled "unit"; None when unsure."""
    if view.op_type == "Transpose":
        perm = view.attributes["perm"].value if "perm" in view.attributes else list(reversed(range(len(labels))))
        return [labels[p] for p in perm] if len(perm) == len(labels) else None
    axes = _axes(view)
    if axes is None:
        return None
    if view.op_type == "Unsqueeze":
        rank = len(labels) + len(axes)
        out = list(labels)
        for axis in sorted(a % rank for a in axes):
            out.insert(axis, "unit")
        return out
    axes = {a % len(labels) for a in axes}  # Squeeze: only the unit axes Unsqueeze made may go
    if any(labels[a] != "unit" for a in axes):
        return None
    return [label for k, label in enumerate(labels) if k not in axes]


def _axes(node: ir.Node) -> list[int] | None:
    if "axes" in node.attributes:
        return list(node.attributes["axes"].value)
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].const_value is not None:
        return [int(a) for a in node.inputs[1].const_value.numpy().reshape(-1)]
    return None


def _static(value: ir.Value | None) -> list | None:
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


def _slice(graph: ir.Graph, gather: ir.Node, packed: ir.Value, start: int, stop: int) -> ir.Node:
    base = gather.name or gather.outputs[0].name
    constants = []
    for suffix, number in (("starts", start), ("ends", stop), ("axes", -1)):
        name = f"{base}__{suffix}"
        while name in graph.initializers:
            name += "_"
        value = ir.Value(name=name, shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64),
                         const_value=ir.Tensor(np.array([number], dtype=np.int64), name=name))
        graph.register_initializer(value)
        constants.append(value)
    node = ir.Node("", "Slice", [packed, *constants], name=f"{base}__slice", num_outputs=1)
    node.outputs[0].name = f"{gather.outputs[0].name}__sliced"
    node.outputs[0].shape = gather.outputs[0].shape
    node.outputs[0].type = gather.outputs[0].type
    graph.insert_before(gather, node)
    return node
