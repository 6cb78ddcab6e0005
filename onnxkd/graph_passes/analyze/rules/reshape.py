"""Rules for ops that move channels between axes (Reshape, Flatten, Squeeze/Unsqueeze, Transpose), and the
shape-constant edits that go with them."""

from __future__ import annotations

from math import prod

from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import Layout, Seg, cut, total
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule

# --------------------------------------------------------------------------- reshape family


def _solve(a: list, b: list) -> tuple[list, list] | None:
    """Fill one unknown dim from the element count; shared symbolic prefix/suffix dims pair up."""
    a, b = list(a), list(b)
    lo = 0
    while lo < min(len(a), len(b)) and a[lo] is not None and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < min(len(a), len(b)) - lo and a[-1 - hi] is not None and a[-1 - hi] == b[-1 - hi]:
        hi += 1
    mid_a, mid_b = a[lo:len(a) - hi], b[lo:len(b) - hi]
    for x, y in ((mid_a, mid_b), (mid_b, mid_a)):
        unknown = [i for i, d in enumerate(x) if not isinstance(d, int)]
        if len(unknown) == 1 and all(isinstance(d, int) for d in y):
            known = prod(d for d in x if isinstance(d, int))
            if known and prod(y) % known == 0:
                x[unknown[0]] = prod(y) // known
    if not all(isinstance(d, int) for d in mid_a + mid_b):
        return None
    return a[:lo] + mid_a + a[len(a) - hi:], b[:lo] + mid_b + b[len(b) - hi:]


def axis_groups(a: list, b: list) -> tuple[list[tuple[list[int], list[int]]], list, list] | None:
    """Pair runs of input axes with runs of output axes that hold the same elements (row-major)."""
    solved = _solve(a, b)
    if solved is None:
        return None
    a, b = solved
    groups, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if not isinstance(a[i], int) or not isinstance(b[j], int):
            if a[i] != b[j]:
                return None
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ia, ob, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(a) or not isinstance(a[i], int):
                    return None
                pa, i = pa * a[i], i + 1
                ia.append(i - 1)
            else:
                if j >= len(b) or not isinstance(b[j], int):
                    return None
                pb, j = pb * b[j], j + 1
                ob.append(j - 1)
        groups.append((ia, ob))
    rest_a, rest_b = list(range(i, len(a))), list(range(j, len(b)))
    if any(a[k] != 1 for k in rest_a) or any(b[k] != 1 for k in rest_b):
        return None
    if groups:
        groups[-1] = (groups[-1][0] + rest_a, groups[-1][1] + rest_b)
    return groups, a, b


def remap(ctx: Ctx, layouts: dict[int, Layout], in_shape: list | None, out_shape: list | None) -> dict | None:
    """Layouts of a reshaped tensor, or None (after freezing) when channels cannot be followed."""
    if not layouts:
        return {}
    found = axis_groups(in_shape, out_shape) if in_shape is not None and out_shape is not None else None
    if found is None:
        ctx.freeze_inputs(f"cannot follow channels through {ctx.where} (unknown shapes)")
        return None
    groups, a, b = found
    out = {}
    for ia, ob in groups:
        tracked = [k for k in ia if k in layouts]
        if not tracked:
            continue
        if len(tracked) > 1:
            ctx.freeze_inputs(f"{ctx.where} merges two channel axes")
            return None
        k = tracked[0]
        lay, outer = layouts[k], prod(a[x] for x in ia if x < k)
        inner = prod(a[x] for x in ia if x > k)
        if len(ia) == 1 and len(ob) > 1 and b[ob[0]] > 1 and _taken_apart(ctx.node.outputs[0], ob[0], len(b)):
            unpacked = _unpacked(ctx, lay, b[ob[0]])
            if unpacked is not None:
                lay, ob = unpacked, ob[1:]
        if len(ia) == 1 and len(ob) > 1:
            # a merged axis split again (batch x heads -> batch, heads): channels repeating with the period
            # of the trailing output axes live on those axes, once
            for j in range(1, len(ob)):
                base = _period(lay, prod(b[x] for x in ob[j:]))
                if base is not None:
                    lay, ob = base, ob[j:]
                    break
        valid = [p for p in ob if prod(b[x] for x in ob if x < p) == outer]
        candidates = [p for p in valid if b[p] > 1] or valid[:1]  # skip size-1 axes unless the channels are 1 wide
        if not candidates and len(ob) == 1 and outer <= MAX_REPEATS:
            out[ob[0]] = _interleaved(lay, inner, outer)
            continue
        if not candidates and inner == 1:
            merged = _merged_with_outer(ctx, lay, outer, [b[x] for x in ob])
            if merged is not None:
                out[ob[0]] = merged
                continue
        if not candidates:
            ctx.freeze_inputs(f"{ctx.where} interleaves channels with another axis")
            return None
        p = candidates[-1]
        if len(ia) == 1 and ob == [p, p + 1] and b[p] > 1:
            alike = _chunks_alike(ctx, lay, b[p])
            if alike is not None:
                out[p + 1] = alike
                continue
        inner_out = prod(b[x] for x in ob if x > p)
        combined = [Seg(s.gid, s.length * inner, s.block * inner) for s in lay]
        placed = ctx.state.regroup(combined, inner_out, ctx.where)
        if placed is None:
            ctx.freeze_inputs(f"{ctx.where}: channel blocks do not fit the new axes")
            return None
        out[p] = placed
    return out


def _chunks_alike(ctx: Ctx, lay: Layout, g: int) -> Layout | None:
    """[C] -> [g, C/g] where each of the g chunks is a different tensor's channels (a concat before a channel
    shuffle, ShuffleNet v2): channel i of every chunk is coupled with channel i of the others, so every chunk
    shrinks alike and the shuffle keeps pairing the same channels; the layout moves to the C/g axis. None
    (nothing changed) when a chunk is untracked, splits a channel or shares a group with another chunk;
    cutting whole chunks (g shrinks) is then the only option."""
    width = total(lay) // g
    chunks = [cut(lay, k * width, (k + 1) * width) for k in range(g)]
    if any(chunk is None or any(s.gid is None for s in chunk) for chunk in chunks):
        return None
    roots = [{ctx.state.find(s.gid) for s in chunk} for chunk in chunks]
    if len(set().union(*roots)) != sum(len(r) for r in roots):
        return None
    if not all(ctx.state.unify(chunks[0], chunk, ctx.where) for chunk in chunks[1:]):
        return None
    return chunks[0]


def _taken_apart(value, axis: int, rank: int) -> bool:
    """Whether every reader of ``value``, through Transposes, takes the slabs of ``axis`` apart (a Split along it,
    a Gather of one index on it, or a Slice of it alone): q, k and v packed in one projection, reshaped to
    [..., 3, heads, head_dim] and unbound (timm's attention)."""
    uses = value.uses()
    if not uses or value.is_graph_output():
        return False
    for node, index in uses:
        along = node.attributes.get_int("axis", 0)
        if index != 0:
            return False
        if node.op_type == "Transpose":
            perm = list(node.attributes.get_ints("perm", reversed(range(rank))))
            if not _taken_apart(node.outputs[0], perm.index(axis), rank):
                return False
        elif node.op_type == "Split":
            if along % rank != axis:
                return False
        elif node.op_type == "Gather":
            indices = _constant(node, 1)
            if along % rank != axis or indices is None or indices.ndim != 0:
                return False
        elif node.op_type == "Slice":  # the dynamo exporter's unbind
            axes, starts = _constant(node, 3), _constant(node, 1)
            sliced = list(range(len(starts))) if axes is None and starts is not None else axes
            if sliced is None or [int(a) % rank for a in sliced] != [axis]:
                return False
        else:
            return False
    return True


def _constant(node, index: int):
    value = node.inputs[index] if index < len(node.inputs) else None
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _unpacked(ctx: Ctx, lay: Layout, parts: int) -> Layout | None:
    """[parts * E] -> [parts, E] when the parts are then taken apart: one producer's channels (a packed qkv
    projection) split into ``parts`` groups that are coupled channel by channel (head i of q goes with head i of
    k and v), so every part shrinks alike and the layout moves to the E axis. None (nothing changed) when a
    part boundary falls inside a channel."""
    width, rest = divmod(total(lay), parts)
    if rest or not all(ctx.state.split_at(lay, k * width) for k in range(1, parts)):
        return None
    return _chunks_alike(ctx, lay, parts)


def _merged_with_outer(ctx: Ctx, lay: Layout, outer: int, dims: list[int]) -> Layout | None:
    """[..., outer, E] -> [outer * E / T, T] (batch x heads, head_dim): the channels' trailing ``T`` elements
    stay whole (each channel covers whole multiples of T) and the rest merges under ``outer`` untracked rows
    into the first output axis. None when the reshape is not of that form."""
    if len(dims) != 2 or outer > MAX_REPEATS:
        return None
    extent, tail = total(lay), dims[1]
    if extent % tail or dims[0] != outer * (extent // tail):
        return None
    split = ctx.state.regroup(lay, tail, ctx.where)
    return None if split is None else _interleaved(split, 1, outer)


def _period(layout: Layout, period: int) -> Layout | None:
    """The first ``period`` elements of ``layout`` when the layout is that part repeated (and tracks
    channels), else None."""
    if period <= 0 or total(layout) % period or total(layout) == period:
        return None
    chunks, chunk, length = [], [], 0
    for seg in layout:
        chunk.append(seg)
        length += seg.length
        if length == period:
            chunks.append(chunk)
            chunk, length = [], 0
        elif length > period:
            return None
    if chunk or any(c != chunks[0] for c in chunks) or not any(s.gid is not None for s in chunks[0]):
        return None
    return list(chunks[0])


MAX_REPEATS = 4096


def _interleaved(layout: Layout, inner: int, outer: int) -> Layout:
    """Channels merged under ``outer`` untracked rows (channel shuffle: [N, C/g, g] -> [N, C]): the merged
    axis is the layout repeated ``outer`` times, so channel i sits at i, i + g, i + 2g, ... (an index
    mapping; every repeat is sliced and edited alike)."""
    return [Seg(s.gid, s.length * inner, s.block * inner) for s in layout] * outer


@rule("Reshape")
def reshape(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    out = remap(ctx, layouts, ctx.in_shape(0), ctx.out_shape())
    if out is None:
        return
    for p, lay in out.items():
        if not shape_entry_edit(ctx, 1, p, lay, same_axis=layouts.get(p) == lay):
            ctx.freeze(lay, "reshape shape constant not found")
            ctx.freeze_inputs(f"reshape shape constant not found ({ctx.where})")
            return
    ctx.set_out(out)


def shape_entry_edit(ctx: Ctx, index: int, p: int, lay: Layout, same_axis: bool, minus_one: bool = True) -> bool:
    """Record how entry p of the shape input shrinks; False when it cannot be found or rewritten. ``minus_one``:
    an entry computed at run time may become -1 (Reshape infers it; Expand cannot)."""
    if not any(s.gid is not None for s in lay):
        return True
    name = ctx.initializer(index)
    allow_zero = ctx.attr("allowzero", 0)
    if name is not None:
        value = int(ctx.const(index)[p])
        if value == -1 or (value == 0 and not allow_zero and same_axis):
            return True
        if value != total(lay):
            return False
        edit_segments(ctx, lay, Edit("tensor", name, p))
        return True
    shape_value = ctx.input(index)
    if entry_follows(ctx, shape_value, p, lay):
        return True  # e.g. Reshape(y, Shape(x)) where x carries the same channels
    producer = shape_value.producer() if shape_value is not None else None
    if producer is None or producer.op_type != "Concat" or len(shape_value.uses()) != 1:
        return False
    offset = 0
    pieces = []
    for j, piece in enumerate(producer.inputs):
        shp = ctx.shape(piece)
        if shp is None or len(shp) != 1 or not isinstance(shp[0], int):
            return False
        pieces.append((j, piece, offset, shp[0]))
        offset += shp[0]
    j, piece, start, length = next(x for x in pieces if x[2] <= p < x[2] + x[3])
    if piece.const_value is not None:
        if not piece.is_initializer() or len(piece.uses()) != 1:
            return False
        value = int(piece.const_value.numpy()[p - start])
        if value == -1:
            return True
        if value != total(lay):
            return False
        edit_segments(ctx, lay, Edit("tensor", piece.name, p - start))
        return True
    if _reads_own_size(ctx, piece, lay, p - start):
        return True  # Shape(t)[axis] of a tensor that carries the same channels: follows the cut by itself
    others = [x[1] for x in pieces if x[1] is not piece and x[1].const_value is not None]
    if not minus_one or length != 1 or any(-1 in o.const_value.numpy().tolist() for o in others):
        return False
    for seg in lay:
        if seg.gid is not None:
            ctx.state.add_edit(seg.gid, Edit("minus_one", producer.name, j))
    return True


def shape_read(ctx: Ctx, value) -> tuple[object, int] | None:
    """(t, a) when ``value`` holds Shape(t)[a:a+len] (Shape start/end, Slice or Gather, Unsqueeze), else None."""
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == "Unsqueeze":
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    first, sliced = 0, None
    if node is not None and node.op_type in ("Gather", "Slice") and len(node.inputs) > 1 and node.inputs[1] is not None:
        index = node.inputs[1].const_value
        if index is None or index.size != 1 or (node.op_type == "Slice" and len(node.inputs) > 4 and node.inputs[4] is not None):
            return None
        first, sliced = int(index.numpy().reshape(-1)[0]), node.op_type == "Slice"
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    if node is None or node.op_type != "Shape" or node.inputs[0] is None:
        return None
    rank = len(ctx.shape(node.inputs[0]) or [])
    start = node.attributes["start"].value if "start" in node.attributes else 0
    end = node.attributes["end"].value if "end" in node.attributes else rank
    if not rank:
        return None
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    if sliced:  # Slice clamps its start (INT64_MIN = from the beginning; negative = from the end)
        length = end - start
        first = min(max(first + length if first < 0 else first, 0), length)
    elif first < 0:
        return None
    return node.inputs[0], start + first


def _reads_own_size(ctx: Ctx, piece, lay: Layout, index: int = 0) -> bool:
    """Whether entry ``index`` of ``piece`` is Shape(t)[k] with t[k] laid out as ``lay`` (it follows the cut)."""
    found = shape_read(ctx, piece)
    if found is None or ctx.state.get(found[0].name).get(found[1] + index) != lay:
        return False
    ctx.state.followed_sizes.add((found[0].name, found[1] + index))
    return True


def entry_follows(ctx: Ctx, value, position: int, lay: Layout) -> bool:
    """Whether entry ``position`` of a shape-like ``value`` (a Concat of pieces, or one piece) reads a size of ``lay``."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "Concat":
        return _reads_own_size(ctx, value, lay, position)
    offset = 0
    for piece in producer.inputs:
        shp = ctx.shape(piece)
        if shp is None or len(shp) != 1 or not isinstance(shp[0], int):
            return False
        if offset <= position < offset + shp[0]:
            return _reads_own_size(ctx, piece, lay, position - offset)
        offset += shp[0]
    return False


def edit_segments(ctx: Ctx, lay: Layout, edit: Edit) -> None:
    for seg in lay:
        if seg.gid is not None:
            ctx.state.add_edit(seg.gid, edit, seg.block)


@rule("Flatten", "Squeeze", "Unsqueeze")
def flatten(ctx: Ctx) -> None:
    out = remap(ctx, ctx.layouts(0), ctx.in_shape(0), ctx.out_shape())
    if out:
        ctx.set_out(out)


@rule("Transpose")
def transpose(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    rank = len(ctx.in_shape(0) or [])
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    ctx.set_out({perm.index(k): lay for k, lay in layouts.items()})


@rule("DepthToSpace", "SpaceToDepth")
def depth_to_space(ctx: Ctx) -> None:
    """Channels and b x b pixel blocks trade places (PixelShuffle in super-resolution nets). DepthToSpace in CRD
    order reads output channel c from input channels [c*b*b, (c+1)*b*b): whole blocks of b*b go; in DCR order
    (the default) from channel c of each of the b*b chunks of C: the chunks shrink alike. SpaceToDepth writes
    the input's channels once per pixel of a block, as chunks."""
    layouts = ctx.layouts(0)
    channels = layouts.get(1)
    for k, lay in layouts.items():
        if k != 1:
            ctx.freeze(lay, "moved between channels and pixels")
    if not channels:
        return
    pixels = ctx.attr("blocksize") ** 2
    if ctx.node.op_type == "SpaceToDepth":
        out = _interleaved(channels, 1, pixels)
    elif ctx.attr("mode", "DCR") == "CRD":
        out = ctx.state.regroup(channels, pixels, ctx.where)
    else:
        out = _unpacked(ctx, channels, pixels)
    if out is None:
        ctx.freeze(channels, "moved between channels and pixels")
        return
    ctx.set_out({1: out})
