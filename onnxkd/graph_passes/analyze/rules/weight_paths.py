"""Where an operand's axis is a weight's axis, moved by ops that only move elements: a relative-position bias
table [(2w-1)^2, heads] gathered, reshaped to [n, n, heads], transposed and unsqueezed to [1, heads, n, n] before
it is added to the attention scores (Swin as the legacy exporter writes it; T5's bias gathered by run-time
buckets). Cutting heads then slices the table's heads axis, and every op on the way follows by itself."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxkd.graph_passes.analyze.rules.registry import Ctx
from onnxkd.graph_passes.analyze.rules.reshape import axis_groups

MAX_STEPS = 16


# Readers that may share a moved weight: each adopts it (``adopt``), so all of them cut the same channels (T5
# computes its position bias once and adds it to the scores of every layer).
SHARING = ("Add", "Sub", "Mul", "Div")


@dataclass(frozen=True)
class Moved:
    """A weight's axis that an operand holds; ``readers``: the nodes that read a tensor on the way which more
    than one node reads (each must adopt the weight too, or its channels stay)."""

    name: str
    axis: int
    readers: frozenset[str] = frozenset()


def weight_axis(ctx: Ctx, value: ir.Value | None, axis: int) -> Moved | None:
    """The initializer axis whose elements ``value`` holds along ``axis``, through Unsqueeze, Squeeze, Transpose,
    Gather along another axis, Cast, Identity, Reshapes that keep the axis whole with a -1 or 0 in its place
    (so that they follow the cut), and arithmetic with operands broadcast along it (a mask); each tensor on the
    way read by the next op alone, or by arithmetic only. None otherwise."""
    readers: set[str] = set()
    for _ in range(MAX_STEPS):
        if value is None or value.is_graph_output():
            return None
        uses = value.uses()
        if len(uses) > 1:
            if not all(use.node.op_type in SHARING for use in uses):
                return None
            readers.update(use.node.name for use in uses)
        if value.is_initializer() and value.const_value is not None:
            return Moved(value.name, axis, frozenset(readers))
        node = value.producer()
        if node is None or not node.inputs:
            return None
        if node.op_type in SHARING:
            value, axis = _carrier(ctx, node, axis)
            continue
        axis = _input_axis(ctx, node, axis)
        if axis is None:
            return None
        value = node.inputs[0]
    return None


def adopt(ctx: Ctx, layout, moved: Moved) -> None:
    """The weight's axis follows ``layout``: sliced the first time, coupled with the first reader's channels after."""
    key = (moved.name, moved.axis)
    first = ctx.state.adopted.setdefault(key, layout)
    if first is layout:
        ctx.state.slice_layout(layout, moved.name, moved.axis, "param")
    else:
        ctx.state.unify(first, layout, ctx.where)
    ctx.state.adopters.setdefault(key, set()).add(ctx.node.name)
    ctx.state.shared_readers.setdefault(key, set()).update(moved.readers)


def settle(state) -> None:
    """After the walk: a weight shared by readers that did not all adopt it (one of them met no channels to cut
    along it) keeps its channels, and so do the layouts coupled with it."""
    for key, layout in state.adopted.items():
        missing = state.shared_readers.get(key, set()) - state.adopters.get(key, set())
        if missing:
            state.freeze_layout(layout, f"weight {key[0]!r} is also read by {sorted(missing)[0]!r}, which keeps it whole")


def _carrier(ctx: Ctx, node: ir.Node, axis: int) -> tuple[ir.Value | None, int]:
    """The one operand of elementwise ``node`` that holds its output's ``axis`` whole, the others broadcast along it
    (size 1 or absent); (None, axis) when there is not exactly one."""
    rank = len(ctx.shape(node.outputs[0]) or [])
    extent = (ctx.shape(node.outputs[0]) or [None] * (axis + 1))[axis]
    found = []
    for value in node.inputs:
        shape = ctx.shape(value)
        if shape is None:
            return None, axis
        k = axis - (rank - len(shape))
        if k >= 0 and shape[k] != 1:
            found.append((value, k))
    return found[0] if len(found) == 1 and ctx.shape(found[0][0])[found[0][1]] == extent else (None, axis)


def _input_axis(ctx: Ctx, node: ir.Node, axis: int) -> int | None:
    """The axis of ``node``'s first input that its output's ``axis`` holds, element for element; None if none."""
    op = node.op_type
    if op in ("Cast", "Identity"):
        return axis
    rank_in = len(ctx.shape(node.inputs[0]) or [])
    if op == "Transpose":
        perm = list(node.attributes.get_ints("perm", reversed(range(rank_in))))
        return perm[axis] if axis < len(perm) else None
    if op in ("Unsqueeze", "Squeeze"):
        return _squeezed_axis(ctx, node, axis, rank_in)
    if op == "Gather":
        along = node.attributes.get_int("axis", 0) % max(rank_in, 1)
        rank_indices = len(ctx.shape(node.inputs[1]) or [])
        if axis < along:
            return axis
        return axis - rank_indices + 1 if axis >= along + rank_indices else None
    if op == "Reshape":
        return _reshaped_axis(ctx, node, axis)
    return None


def _squeezed_axis(ctx: Ctx, node: ir.Node, axis: int, rank_in: int) -> int | None:
    axes = node.attributes.get_ints("axes") or (ctx.folded(node.inputs[1]) if len(node.inputs) > 1 else None)
    if node.op_type == "Unsqueeze":
        if axes is None:
            return None
        added = {int(a) % (rank_in + len(axes)) for a in axes}
        return None if axis in added else axis - sum(a < axis for a in added)
    shape = ctx.shape(node.inputs[0])
    if axes is None and shape is None:
        return None
    removed = {int(a) % rank_in for a in axes} if axes is not None else {k for k, d in enumerate(shape) if d == 1}
    kept = [k for k in range(rank_in) if k not in removed]
    return kept[axis] if axis < len(kept) else None


def _reshaped_axis(ctx: Ctx, node: ir.Node, axis: int) -> int | None:
    """A Reshape that keeps the axis whole (one input axis of the same extent, the rest of its run 1s) and writes
    -1 or 0 in its place, so that the cut size passes through."""
    in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    target = ctx.folded(node.inputs[1]) if len(node.inputs) > 1 else None
    found = axis_groups(in_shape, out_shape) if in_shape is not None and out_shape is not None else None
    if found is None or target is None or axis >= len(target):
        return None
    entry = int(target[axis])
    if entry != -1 and not (entry == 0 and not node.attributes.get_int("allowzero", 0)):
        return None
    groups, a, b = found
    for ia, ob in groups:
        if axis in ob:
            whole = [k for k in ia if a[k] != 1]
            return whole[0] if ob == [axis] and len(whole) == 1 and a[whole[0]] == b[axis] else None
    return None
