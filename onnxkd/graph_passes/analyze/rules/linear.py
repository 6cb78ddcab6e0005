"""Rules for the ops that mix channels with weights: they consume one group and start another."""

from __future__ import annotations

from fractions import Fraction

from onnxkd.graph_passes.analyze.balance import Balance, block_layouts, isolate_straddlers
from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import Seg
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule


def source_group(ctx: Ctx, size: int, weight: str, axis: int, bias: str | None, bias_axis: int = 0,
                 offset: int = 0) -> Seg:
    """A new group of ``size`` output channels: rows [offset, offset + size) of the weight (and bias)."""
    gid = ctx.state.new_group(size, ctx.node.name or ctx.node.outputs[0].name)
    ctx.state.add_slice(gid, weight, axis, offset, Fraction(1), "out")
    if bias is not None:
        ctx.state.add_slice(gid, bias, bias_axis, offset, Fraction(1), "out")
    return Seg(gid, size)


def table_source(ctx: Ctx, taken: set[int], out_rank: int) -> bool:
    """Opt-in (``prune_normalized``): a Gather/Slice reading a float table (token or position embeddings)
    starts a group on the table's last axis, its hidden size, when that axis is not the one indexed."""
    data = ctx.input(0)
    name = ctx.initializer(0)
    shape = ctx.in_shape(0)
    if not ctx.state.prune_normalized or name is None or not shape or len(shape) < 2 or out_rank < 1:
        return False
    if not data.const_value.dtype.is_floating_point() or len(shape) - 1 in taken:
        return False
    last = len(shape) - 1
    gid = ctx.state.new_group(shape[last], ctx.node.name or ctx.node.outputs[0].name)
    ctx.state.add_slice(gid, name, last, 0, Fraction(1), "out")
    ctx.set_out({out_rank - 1: [Seg(gid, shape[last])]})
    return True


def _spatial_frozen(ctx: Ctx, layouts: dict, channel_axis: int = 1) -> None:
    for k, lay in layouts.items():
        if k != channel_axis and k != 0:
            ctx.freeze(lay, "convolved along the channel axis")


def _conv_operands(ctx: Ctx) -> tuple[str | None, str | None, dict, list | None, bool]:
    """Weight and bias initializer names, the input's layouts (spatial ones frozen), the weight's shape, and
    whether the weights are plain initializers this node alone reads (Conv and ConvTranspose)."""
    has_bias = ctx.input(2) is not None
    weight, bias = ctx.initializer(1), ctx.initializer(2) if has_bias else None
    layouts = ctx.layouts(0)
    _spatial_frozen(ctx, layouts)
    shape = ctx.in_shape(1)
    return weight, bias, layouts, shape, weight is not None and not (has_bias and bias is None) and shape is not None


@rule("Conv")
def conv(ctx: Ctx) -> None:
    weight, bias, layouts, shape, plain = _conv_operands(ctx)
    if not plain:
        ctx.freeze_inputs(f"weights are not plain initializers ({ctx.where})")
        return
    groups = ctx.attr("group", 1)
    out = {0: layouts[0]} if 0 in layouts else {}
    cout = shape[0]
    channels = layouts.get(1)
    if groups == 1:
        if channels:
            ctx.state.slice_layout(channels, weight, 1, "in")
        out[1] = [source_group(ctx, cout, weight, 0, bias)]
        ctx.set_out(out)
        return
    cin_per_group, cout_per_group = shape[1], cout // groups
    if not channels or not _whole_groups(ctx, channels, cin_per_group):
        # Channels inside conv groups (ResNeXt; after a ShuffleNet v1 shuffle, straddling them; a residual stream
        # of concatenated parts) or none to cut: every conv group keeps as many inputs as the others, each at
        # its own positions, and likewise outputs, so `group` stays.
        if channels and not _balanced_inputs(ctx, channels, weight, cin_per_group, groups, cout_per_group):
            return
        out[1] = _balanced_source(ctx, weight, bias, groups, cout_per_group)
        ctx.set_out(out)
        return
    # Depthwise, or channels covering whole conv groups: a conv group's inputs and outputs are cut together.
    coarse = ctx.state.regroup(channels, cin_per_group, ctx.where)
    if coarse is None:
        return
    scale = Fraction(cout_per_group)
    out_layout = [Seg(s.gid, s.length * cout_per_group, s.block * scale) for s in coarse]
    ctx.state.slice_layout(out_layout, weight, 0, "param")
    if bias is not None:
        ctx.state.slice_layout(out_layout, bias, 0, "param")
    for seg in coarse:
        if seg.gid is not None:
            ctx.state.add_edit(seg.gid, Edit("attr", ctx.node.name, -1, attr="group"), seg.block)
    out[1] = out_layout
    ctx.set_out(out)


def _whole_groups(ctx: Ctx, layout, width: int) -> bool:
    """Whether every channel covers whole conv groups of ``width`` inputs (depthwise convs; ShuffleNet v2's
    shuffled pairs), so that cutting one cuts whole conv groups."""
    offset = 0
    for seg in layout:
        if offset % width or seg.length % width:
            return False
        if seg.gid is not None:
            block = ctx.state.eff(seg.gid, seg.block)
            if block.denominator != 1 or block % width:
                return False
        offset += seg.length
    return True


def _balanced_inputs(ctx: Ctx, channels, weight: str, width: int, groups: int, rows_per_group: int) -> bool:
    """Conv group k's weight rows read the channels at [k * width, (k + 1) * width); the blocks must keep
    equal counts (settled after the walk). False (frozen) when a boundary falls inside an element."""
    if not isolate_straddlers(ctx.state, channels, width, groups, ctx.where):
        ctx.freeze(channels, "channels narrower than one element straddle the conv groups")
        return False
    chunks = block_layouts(ctx.state, channels, width, groups)
    if chunks is None:
        ctx.freeze(channels, "a channel straddles the conv groups")
        return False
    if all(chunk == chunks[0] for chunk in chunks):
        ctx.state.slice_layout(chunks[0], weight, 1, "in")  # the same positions in every conv group
    else:
        for k, chunk in enumerate(chunks):
            ctx.state.slice_layout(chunk, weight, 1, "in", rows=(k * rows_per_group, (k + 1) * rows_per_group))
    ctx.state.balances.append(Balance(channels, width, groups, ctx.where))
    return True


def _balanced_source(ctx: Ctx, weight: str, bias: str | None, groups: int, per_group: int) -> list:
    """A grouped conv's outputs: one group per conv group, kept at equal counts (so `group` stays)."""
    layout = [source_group(ctx, per_group, weight, 0, bias, offset=k * per_group) for k in range(groups)]
    ctx.state.balances.append(Balance(layout, per_group, groups, ctx.where))
    return layout


@rule("ConvTranspose")
def conv_transpose(ctx: Ctx) -> None:
    weight, bias, layouts, shape, plain = _conv_operands(ctx)
    if not plain or ctx.attr("group", 1) != 1:
        ctx.freeze_inputs(f"grouped or non-constant ConvTranspose ({ctx.where})")
        return
    if ctx.attr("output_shape") is not None and len(ctx.attr("output_shape")) > 2:
        ctx.freeze_inputs(f"ConvTranspose output_shape includes channels ({ctx.where})")
        return
    out = {0: layouts[0]} if 0 in layouts else {}
    if layouts.get(1):
        ctx.state.slice_layout(layouts[1], weight, 0, "in")
    out[1] = [source_group(ctx, shape[1], weight, 1, bias)]
    ctx.set_out(out)


@rule("Gemm")
def gemm(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    weight = ctx.initializer(1)
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    shape = ctx.in_shape(1)
    bias_shape = ctx.in_shape(2)
    bias = ctx.initializer(2) if ctx.input(2) is not None else None
    if weight is None or ctx.layouts(1) or (ctx.input(2) is not None and bias is None and bias_shape != [1]):
        ctx.freeze_inputs(f"Gemm without a plain constant weight ({ctx.where})")
        return
    k_axis, m_axis = (0, 1) if trans_a else (1, 0)
    out = {}
    if layouts.get(m_axis):
        out[0] = layouts[m_axis]
    if layouts.get(k_axis):
        ctx.state.slice_layout(layouts[k_axis], weight, 1 if trans_b else 0, "in")
    n = shape[0] if trans_b else shape[1]
    bias_axis = None
    if bias is not None and bias_shape and bias_shape[-1] == n and n != 1:
        bias_axis = len(bias_shape) - 1
    seg = source_group(ctx, n, weight, 0 if trans_b else 1, None)
    if bias_axis is not None:
        ctx.state.add_slice(seg.gid, bias, bias_axis, 0, Fraction(1), "out")
    out[1] = [seg]
    ctx.set_out(out)


@rule("MatMul")
def matmul(ctx: Ctx) -> None:
    a_shape, b_shape = ctx.in_shape(0), ctx.in_shape(1)
    if a_shape is None or b_shape is None or len(a_shape) < 2 or len(b_shape) < 2:
        if ctx.layouts(0) or ctx.layouts(1):
            ctx.freeze_inputs(f"MatMul of unknown or vector shape ({ctx.where})")
        return
    weight = ctx.initializer(1)
    if weight is not None and len(b_shape) == 2:
        _matmul_weight(ctx, a_shape, weight, b_shape)
    elif ctx.input(1).const_value is not None or ctx.input(0).const_value is not None:
        if ctx.layouts(0) or ctx.layouts(1):
            ctx.freeze_inputs(f"MatMul with a shared or batched constant ({ctx.where})")
    else:
        _matmul_activations(ctx, a_shape, b_shape)


def _matmul_weight(ctx: Ctx, a_shape: list, weight: str, b_shape: list) -> None:
    layouts = dict(ctx.layouts(0))
    rank = len(a_shape)
    contracted = layouts.pop(rank - 1, None)
    if contracted:
        ctx.state.slice_layout(contracted, weight, 0, "in")
    layouts[rank - 1] = [source_group(ctx, b_shape[1], weight, 1, None)]
    ctx.set_out(layouts)


def _matmul_activations(ctx: Ctx, a_shape: list, b_shape: list) -> None:
    """q @ k^T and attn @ v: batch axes (heads) couple both sides; contracted axes must stay whole."""
    a, b = ctx.layouts(0), ctx.layouts(1)
    if not a and not b:
        return
    ra, rb = len(a_shape), len(b_shape)
    rank = max(ra, rb)
    for lay in (a.get(ra - 1), b.get(rb - 2)):
        if lay:
            ctx.freeze(lay, "contracted in a MatMul between activations")
    out = {}
    if a.get(ra - 2):
        out[rank - 2] = a[ra - 2]
    if b.get(rb - 1):
        out[rank - 1] = b[rb - 1]
    for axis in range(rank - 2):
        ka, kb = axis - (rank - ra), axis - (rank - rb)
        la, lb = (a.get(ka) if ka >= 0 else None), (b.get(kb) if kb >= 0 else None)
        da = a_shape[ka] if ka >= 0 else 1
        db = b_shape[kb] if kb >= 0 else 1
        if la and lb:
            ctx.state.unify(la, lb, ctx.where)
            out[axis] = la
        elif la or lb:
            lay, other = (la, db) if la else (lb, da)
            if other == 1:
                out[axis] = lay
            else:
                ctx.freeze(lay, "batched against channels that cannot be cut")
    ctx.set_out(out)
