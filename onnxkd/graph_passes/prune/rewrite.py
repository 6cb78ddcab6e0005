"""Apply a plan: slice initializers, shrink attributes and shape constants, drop stale shapes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from onnxkd.graph_passes.analyze.groups import ChannelGroup


def removed_indices(group: ChannelGroup, kept: list[int]) -> list[int]:
    keep = set(kept)
    return [c for c in range(group.size) if c not in keep]


def apply_plan(model: ir.Model, groups: list[ChannelGroup], plan: dict[int, list[int]]) -> ir.Model:
    """Rewrite the prepared ``model`` in place so that group g keeps only channels ``plan[g]``."""
    cut: dict[tuple[str, int, tuple | None], set[int]] = defaultdict(set)  # (name, axis, rows) -> indices
    delta: dict[tuple[str, str, int, str], int] = defaultdict(int)
    minus_one: set[tuple[str, int]] = set()
    pins: dict[str, dict[int, int]] = defaultdict(dict)
    for group in groups:
        kept = plan.get(group.id)
        if kept is None:
            continue
        removed = removed_indices(group, kept)
        if not removed:
            continue
        for s in group.slices:
            indices = cut[(s.name, s.axis, s.rows)]
            for c in removed:
                start = s.offset + c * s.block
                indices.update(range(start, start + s.block))
        for e in group.edits:
            if e.kind == "minus_one":
                minus_one.add((e.target, e.index))
            elif e.kind == "pin":
                pins[e.target][e.index] = e.mult
            else:
                delta[(e.kind, e.target, e.index, e.attr)] += e.mult * len(removed)
    graph = model.graph
    _slice_initializers(graph, cut)
    _edit_constants(graph, delta, minus_one)
    _pin_shapes(graph, pins)
    _forget_shapes(graph)
    return model


def _slice_initializers(graph: ir.Graph, cut: dict[tuple[str, int, tuple | None], set[int]]) -> None:
    by_name: dict[str, dict[int, dict]] = defaultdict(lambda: defaultdict(dict))
    for (name, axis, rows), indices in cut.items():
        by_name[name][axis][rows] = indices
    for name, axes in by_name.items():
        value = graph.initializers[name]
        array = value.const_value.numpy()
        # row-restricted cuts index the original rows: they go first, row deletions (axis 0) last
        for axis in sorted(axes, key=lambda a: (a == 0, a)):
            array = _delete(array, axis, axes[axis])
        _set_const(value, array)


def _delete(array: np.ndarray, axis: int, by_rows: dict[tuple | None, set[int]]) -> np.ndarray:
    """Delete ``by_rows[None]`` along ``axis`` everywhere, and each ``by_rows[(start, stop)]`` within those
    rows of axis 0 only (every row range must lose the same count, so the pieces stack again)."""
    everywhere = by_rows.get(None, set())
    ranges = sorted(r for r in by_rows if r is not None)
    if not ranges:
        return np.delete(array, sorted(everywhere), axis=axis)
    bounds = sorted({0, array.shape[0], *(v for r in ranges for v in r)})
    pieces = []
    for start, stop in zip(bounds, bounds[1:]):
        indices = everywhere | by_rows.get((start, stop), set())
        pieces.append(np.delete(array[start:stop], sorted(indices), axis=axis))
    if len({p.shape[axis] for p in pieces}) != 1:
        raise AssertionError(f"unbalanced cut: row ranges of one initializer keep different counts along axis {axis}")
    return np.concatenate(pieces, axis=0)


def _set_const(value: ir.Value, array: np.ndarray) -> None:
    value.const_value = ir.Tensor(np.ascontiguousarray(array), name=value.name)
    value.shape = ir.Shape(array.shape)


def _edit_constants(graph: ir.Graph, delta: dict, minus_one: set[tuple[str, int]]) -> None:
    nodes = {node.name: node for node in graph}
    for (kind, target, index, attr), amount in delta.items():
        if not amount:
            continue
        if kind == "tensor":
            value = graph.initializers[target]
            array = value.const_value.numpy().copy()
            array[index] -= amount
            _set_const(value, array)
        elif kind == "attr":
            node = nodes[target]
            old = node.attributes[attr].value
            if index < 0:
                node.attributes[attr] = ir.AttrInt64(attr, int(old) - amount)
            else:
                values = list(old)
                values[index] -= amount
                node.attributes[attr] = ir.AttrInt64s(attr, values)
    for target, index in sorted(minus_one):
        node = nodes[target]
        name = f"{target}__minus_one_{index}"
        while name in graph.initializers:
            name += "_"
        value = ir.Value(name=name, shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64),
                         const_value=ir.Tensor(np.array([-1], dtype=np.int64), name=name))
        graph.register_initializer(value)
        node.replace_input_with(index, value)


def _pin_shapes(graph: ir.Graph, pins: dict[str, dict[int, int]]) -> None:
    """Shape(x) -> Shape(x) * keep + original: the pinned entries read the teacher's sizes."""
    nodes = {node.name: node for node in graph}
    for target, entries in sorted(pins.items()):
        node = nodes[target]
        read = node.outputs[0]
        length = read.shape[0] if read.shape is not None and isinstance(read.shape[0], int) else None
        if length is None:
            rank = len(node.inputs[0].shape)
            start = node.attributes["start"].value if "start" in node.attributes else 0
            end = node.attributes["end"].value if "end" in node.attributes else rank
            start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
            length = max(end - start, 0)
        keep, original = np.ones(length, np.int64), np.zeros(length, np.int64)
        for index, size in entries.items():
            keep[index], original[index] = 0, size
        consts = []
        for tag, array in (("keep", keep), ("size", original)):
            name = f"{target}__pin_{tag}"
            while name in graph.initializers:
                name += "_"
            value = ir.Value(name=name, shape=ir.Shape([length]), type=ir.TensorType(ir.DataType.INT64),
                             const_value=ir.Tensor(array, name=name))
            graph.register_initializer(value)
            consts.append(value)
        uses = list(read.uses())
        mul = ir.node("Mul", [read, consts[0]], name=f"{target}__pin_mul")
        add = ir.node("Add", [mul.outputs[0], consts[1]], name=f"{target}__pin_add")
        add.outputs[0].name = f"{read.name}__pinned"
        graph.insert_after(node, [mul, add])
        for use in uses:
            use.node.replace_input_with(use.idx, add.outputs[0])


def _forget_shapes(graph: ir.Graph) -> None:
    """Intermediate shapes (the dynamo exporter writes them all) may be stale: let inference redo them."""
    outputs = {id(v) for v in graph.outputs}
    for node in graph:
        for value in node.outputs:
            if id(value) not in outputs:
                value.shape = None
