"""Rules for ops that take parts of a channel axis or repeat it: Concat, Split, Slice, Gather, Expand, Tile."""

from __future__ import annotations

import numpy as np

from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import Layout, Seg, cut, total
from onnxkd.graph_passes.analyze.rules.linear import table_source
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule
from onnxkd.graph_passes.analyze.rules.reshape import edit_segments, shape_entry_edit

# --------------------------------------------------------------------------- concat / split / slice


@rule("Concat")
def concat(ctx: Ctx) -> None:
    inputs = [i for i, v in enumerate(ctx.node.inputs) if v is not None]
    if not any(ctx.layouts(i) for i in inputs):
        return
    shape = ctx.out_shape() or ctx.in_shape(inputs[0])
    rank = len(shape)
    axis = ctx.attr("axis") % rank
    joined: Layout = []
    for i in inputs:
        lay = ctx.layouts(i).get(axis)
        dim = (ctx.in_shape(i) or [None] * rank)[axis]
        if lay:
            joined.extend(lay)
        elif isinstance(dim, int):
            if dim:
                joined.append(Seg(None, dim))
        else:
            ctx.freeze_inputs(f"concatenated with an input of unknown size ({ctx.where})")
            return
    out = {axis: joined} if any(s.gid is not None for s in joined) else {}
    for k in range(rank):
        if k == axis:
            continue
        lays = [ctx.layouts(i).get(k) for i in inputs]
        tracked = [lay for lay in lays if lay]
        if not tracked:
            continue
        if len(tracked) != len(lays):
            sources = [None if lay else _learned_constant(ctx, i, k) for i, lay in zip(inputs, lays)]
            if all(lay or source for lay, source in zip(lays, sources)):
                for name, init_axis in filter(None, sources):  # a class token: sliced with the channels
                    ctx.state.slice_layout(tracked[0], name, init_axis, "param")
            else:
                for lay in tracked:
                    ctx.freeze(lay, "concatenated with channels that cannot be cut")
                continue
        for lay in tracked[1:]:
            ctx.state.unify(tracked[0], lay, ctx.where)
        out[k] = tracked[0]
    ctx.set_out(out)


def _learned_constant(ctx: Ctx, i: int, k: int) -> tuple[str, int] | None:
    """(initializer, its axis) when input i is a weight this node alone reads, or Expand(weight, shape) with the
    shape's entry for axis k provably 1 (ViT's class token, broadcast over the batch), its axis k full-size."""
    value = ctx.input(i)
    rank = len(ctx.in_shape(i) or [])
    name = ctx.initializer(i)
    producer = value.producer() if value is not None and name is None else None
    if producer is not None and producer.op_type == "Expand" and len(value.uses()) == 1:
        weight, target = producer.inputs[0], ctx.folded(producer.inputs[1])
        if weight is None or not weight.is_initializer() or weight.const_value is None or target is None:
            return None
        if len({id(u.node) for u in weight.uses()}) != 1 or weight.is_graph_output():
            return None
        entry = k - (rank - len(target))
        if entry < 0 or int(np.asarray(target).reshape(-1)[entry]) != 1:
            return None
        name = weight.name
    if name is None:
        return None
    shape = list(ctx.input(i).const_value.shape) if name == ctx.initializer(i) else list(producer.inputs[0].const_value.shape)
    axis = k - (rank - len(shape))
    if axis < 0 or shape[axis] != (ctx.in_shape(i) or [None] * rank)[k]:
        return None
    return name, axis


def _before(layout: Layout, position: int) -> Layout:
    return cut(layout, 0, position) or []


@rule("Split")
def split(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    shape = ctx.in_shape(0)
    rank = len(shape)
    axis = ctx.attr("axis", 0) % rank
    lay = layouts.get(axis)
    if not lay:
        for i in range(len(ctx.node.outputs)):
            ctx.set_out(dict(layouts), i)
        return
    sizes_name, sizes = None, ctx.attr("split")
    if ctx.opset >= 13 and ctx.input(1) is not None:
        sizes_name, sizes = ctx.initializer(1), ctx.const(1)
        sizes = None if sizes is None or sizes_name is None else sizes.tolist()
    if sizes is None:
        ctx.freeze(lay, "split into equal parts along the channel axis")
        return
    for position in np.cumsum(sizes)[:-1].tolist():
        ctx.state.split_at(lay, position)  # a chunk through one group makes two groups (layouts change in place)
    start = 0
    for i, size in enumerate(sizes):
        part = cut(lay, start, start + size)
        if part is None:
            ctx.freeze(lay, "split through a channel group")
            return
        edit = Edit("tensor", sizes_name, i) if sizes_name else Edit("attr", ctx.node.name, i, attr="split")
        edit_segments(ctx, part, edit)
        layouts_i = {k: v for k, v in layouts.items() if k != axis}
        layouts_i[axis] = part
        ctx.set_out(layouts_i, i)
        start += size


@rule("Slice")
def slice_(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        _slice_table(ctx)
        return
    shape = ctx.in_shape(0)
    rank = len(shape)
    if ctx.opset < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
        names = (None, None)
    else:
        values = [ctx.const(i) if ctx.input(i) is not None else None for i in range(1, 5)]
        if any(ctx.input(i) is not None and values[i - 1] is None for i in range(1, 5)):
            ctx.freeze_inputs(f"slice bounds not constant ({ctx.where})")
            return
        starts, ends, axes, steps = (v.tolist() if v is not None else None for v in values)
        names = (ctx.initializer(1), ctx.initializer(2))
    axes = [a % rank for a in (axes if axes is not None else range(len(starts)))]
    steps = steps or [1] * len(axes)
    out = dict(layouts)
    for j, axis in enumerate(axes):
        lay = layouts.get(axis)
        if not lay:
            continue
        dim = total(lay)
        start, end = starts[j], ends[j]
        if start == 0 and end >= dim and steps[j] == 1:
            continue
        if steps[j] == 1 and start >= 0 and end >= 0:
            ctx.state.split_at(lay, start)
            ctx.state.split_at(lay, min(end, dim))
        part = cut(lay, start, min(end, dim)) if steps[j] == 1 and start >= 0 and end >= 0 else None
        if part is None or (ctx.opset >= 10 and None in names):
            ctx.freeze(lay, "sliced through a channel group")
            out.pop(axis)
            continue
        if ctx.opset < 10:
            edit_segments(ctx, _before(lay, start), Edit("attr", ctx.node.name, j, attr="starts"))
            if end < dim:
                edit_segments(ctx, _before(lay, end), Edit("attr", ctx.node.name, j, attr="ends"))
        else:
            edit_segments(ctx, _before(lay, start), Edit("tensor", names[0], j))
            if end < dim:
                edit_segments(ctx, _before(lay, end), Edit("tensor", names[1], j))
        out[axis] = part
    ctx.set_out(out)


def _slice_table(ctx: Ctx) -> None:
    """A position table sliced to the sequence length (``pos[:, :T]``, T often dynamic) along other axes."""
    rank = len(ctx.in_shape(0) or [])
    if not rank:
        return
    axes = ctx.attr("axes") if ctx.opset < 10 else (ctx.const(3) if ctx.input(3) is not None else None)
    if ctx.opset >= 10 and ctx.input(3) is not None and axes is None:
        return
    taken = {int(a) % rank for a in axes} if axes is not None else set(range(rank))
    table_source(ctx, taken, rank)


# --------------------------------------------------------------------------- gather / expand / tile


@rule("Gather")
def gather(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if ctx.layouts(1):
        ctx.freeze_inputs(f"channels used as indices ({ctx.where})")
        return
    rank = len(ctx.in_shape(0) or [])
    if not layouts:
        if rank and ctx.in_shape(1) is not None:
            table_source(ctx, {ctx.attr("axis", 0) % rank}, rank + len(ctx.in_shape(1)) - 1)
        return
    axis = ctx.attr("axis", 0) % rank
    idx_rank = len(ctx.in_shape(1) or [])
    out = {}
    for k, lay in layouts.items():
        if k == axis:
            ctx.freeze(lay, "gathered along the channel axis")
        else:
            out[k if k < axis else k + idx_rank - 1] = lay
    ctx.set_out(out)


@rule("Expand")
def expand(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    target = ctx.folded(ctx.input(1))  # a constant, or computed from shapes (at stand-in sizes)
    if target is None or ctx.layouts(1):
        ctx.freeze_inputs(f"expand shape not constant ({ctx.where})")
        return
    rank_in, rank_t = len(ctx.in_shape(0) or []), len(target)
    rank = max(rank_in, rank_t)
    out = {}
    for k, lay in layouts.items():
        axis = k + rank - rank_in
        entry_index = axis - (rank - rank_t)
        entry = int(target[entry_index]) if entry_index >= 0 else 1
        if entry == 1 and (ctx.input(1).const_value is not None or entry_index < 0):
            out[axis] = lay
        elif entry == total(lay) and shape_entry_edit(ctx, 1, entry_index, lay, same_axis=False, minus_one=False):
            out[axis] = lay
        else:
            ctx.freeze(lay, "expanded along the channel axis")
    ctx.set_out(out)


@rule("Tile")
def tile(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    repeats = ctx.const(1)
    out = {}
    for k, lay in layouts.items():
        if repeats is not None and int(np.asarray(repeats)[k]) == 1:
            out[k] = lay
        else:
            ctx.freeze(lay, "tiled along the channel axis")
    ctx.set_out(out)

