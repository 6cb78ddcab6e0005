"""Rules for normalisations: per-channel ones are sliced, ones that mix channels freeze the group."""

from __future__ import annotations

from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import total
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule

# input index -> slice role, for the per-channel parameters (shape [C]) of each op
PER_CHANNEL = {
    "BatchNormalization": {1: "bn_scale", 2: "param", 3: "stat", 4: "stat"},
    "InstanceNormalization": {1: "bn_scale", 2: "param"},
}


@rule("BatchNormalization", "InstanceNormalization")
def per_channel_norm(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    for k in layouts:
        if k != 1:
            ctx.freeze_inputs(f"normalisation statistics over a channel axis ({ctx.where})")
            return
    channels = layouts[1]
    for index, role in PER_CHANNEL[ctx.node.op_type].items():
        if ctx.input(index) is None:
            continue
        name = ctx.initializer(index)
        if name is None:
            ctx.freeze(channels, "normalisation parameters are not plain initializers")
            return
        ctx.state.slice_layout(channels, name, 0, role)
    ctx.set_out({1: channels})
    if ctx.node.op_type == "BatchNormalization":
        for extra in ctx.node.outputs[1:]:
            if extra.uses():
                ctx.freeze(channels, "training-mode statistics used")


@rule("LayerNormalization", "RMSNormalization")
def layer_norm(ctx: Ctx) -> None:
    """Statistics over axes [axis, rank): cutting them changes mean and variance, so it is opt-in.

    With ``prune_normalized`` a hidden size normalised alone (axis = last) is cut: scale and bias are
    sliced with it. The student then computes the network at a smaller hidden size, which is no longer
    the teacher with channels zeroed (the group is marked ``normalized``).
    """
    layouts = ctx.layouts(0)
    if not layouts:
        return
    rank = len(ctx.in_shape(0) or [])
    axis = ctx.attr("axis", -1) % rank
    out = {k: lay for k, lay in layouts.items() if k < axis}
    normalised = {k: lay for k, lay in layouts.items() if k >= axis}
    if not normalised:
        ctx.set_out(out)
        return
    hidden = normalised.get(rank - 1)
    width = total(hidden) if hidden else None
    params = [ctx.input(i) is None or (ctx.initializer(i) is not None and ctx.in_shape(i) == [width]) for i in (1, 2)]
    stats_used = any(extra.uses() for extra in ctx.node.outputs[1:])
    if not ctx.state.prune_normalized or hidden is None or len(normalised) > 1 or not all(params) or stats_used:
        op = ctx.node.op_type
        why = (f"{op} statistics over the hidden size (--prune-normalized cuts it)" if not ctx.state.prune_normalized
               else f"{op} over several axes, with non-constant parameters or used statistics")
        for lay in normalised.values():
            ctx.freeze(lay, why)
        ctx.set_out(out)
        return
    ctx.state.slice_layout(hidden, ctx.initializer(1), 0, "bn_scale")
    if ctx.input(2) is not None:
        ctx.state.slice_layout(hidden, ctx.initializer(2), 0, "param")
    ctx.state.normalized.update(seg.gid for seg in hidden if seg.gid is not None)
    out[rank - 1] = hidden
    ctx.set_out(out)


@rule("GroupNormalization")
def group_norm(ctx: Ctx) -> None:
    """Statistics per group of C/num_groups channels: whole norm groups can go (num_groups shrinks)."""
    layouts = ctx.layouts(0)
    channels = layouts.get(1)
    if not channels or any(k != 1 for k in layouts):
        channel_mixing_norm(ctx)
        return
    groups = ctx.attr("num_groups")
    scale, bias = ctx.initializer(1), ctx.initializer(2)
    if not groups or scale is None or bias is None:
        channel_mixing_norm(ctx)
        return
    per_group = sum(seg.length for seg in channels) // groups
    coarse = ctx.state.regroup(channels, per_group, ctx.where)
    if coarse is None:
        return
    params = channels if ctx.opset >= 21 else coarse  # scale/bias per channel from opset 21, per group before
    ctx.state.slice_layout(params, scale, 0, "bn_scale")
    ctx.state.slice_layout(params, bias, 0, "param")
    for seg in coarse:
        if seg.gid is not None:
            ctx.state.add_edit(seg.gid, Edit("attr", ctx.node.name, -1, attr="num_groups"), seg.block)
    ctx.set_out({1: channels})


@rule("LRN", "MeanVarianceNormalization", "LpNormalization")
def channel_mixing_norm(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    rank = len(ctx.in_shape(0) or [])
    if ctx.node.op_type == "MeanVarianceNormalization":
        mixed = {a % rank for a in ctx.attr("axes", [0, 2, 3])} if rank else set(layouts)
    elif ctx.node.op_type == "LpNormalization":
        mixed = {ctx.attr("axis", -1) % rank} if rank else set(layouts)
    else:
        mixed = {1}
    out = {}
    for k, lay in layouts.items():
        if k in mixed:
            ctx.freeze(lay, f"{ctx.node.op_type} mixes channels")
        else:
            out[k] = lay
    ctx.set_out(out)
