"""Rules for ops that keep channels apart: activations, elementwise arithmetic, pooling, reductions."""

from __future__ import annotations

from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import total
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule
from onnxkd.graph_passes.analyze.rules.reshape import entry_follows
from onnxkd.graph_passes.analyze.rules.weight_paths import Moved, adopt, weight_axis

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "ThresholdedRelu",
    "Shrink", "Identity", "Cast", "CastLike", "Not", "IsNaN", "IsInf", "Dropout", "Clip", "Swish",
)
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less",
          "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift", "PRelu")


@rule(*UNARY)
def unary(ctx: Ctx) -> None:
    # Clip's min/max, CastLike's target and Dropout's ratio are scalars: only input 0 carries channels.
    layouts = ctx.layouts(0)
    for extra in range(1, len(ctx.node.inputs)):
        if ctx.layouts(extra):
            ctx.freeze_inputs()
            return
    for i in range(len(ctx.node.outputs)):
        ctx.set_out(dict(layouts), i)


@rule(*BINARY)
def broadcast(ctx: Ctx) -> None:
    """Numpy broadcasting: aligned channel axes of activations are coupled; constants are sliced."""
    inputs = [i for i, v in enumerate(ctx.node.inputs) if v is not None]
    if not any(ctx.layouts(i) for i in inputs):
        return
    shapes = {i: ctx.in_shape(i) for i in inputs}
    if any(s is None for s in shapes.values()):
        ctx.freeze_inputs(f"unknown operand shape at {ctx.where}")
        return
    rank = max(len(s) for s in shapes.values())
    out = {}
    for axis in range(rank):
        operands = []
        for i in inputs:
            k = axis - (rank - len(shapes[i]))
            if k >= 0:
                operands.append((i, k, shapes[i][k], ctx.layouts(i).get(k)))
        tracked = [lay for *_, lay in operands if lay]
        if not tracked:
            continue
        base = tracked[0]
        extent = total(base)
        for i, k, dim, lay in operands:
            if lay:
                ctx.state.unify(base, lay, ctx.where)
            elif dim == 1 and extent != 1:
                continue  # broadcast along the channels: nothing to cut
            elif dim == extent and (weight := _weight(ctx, i, k)) is not None:
                adopt(ctx, base, weight)
            else:
                ctx.freeze(base, "combined with an operand whose channels cannot be cut")
        out[axis] = base
    ctx.set_out(out)


def _weight(ctx: Ctx, i: int, axis: int) -> Moved | None:
    """The initializer axis that operand ``i`` holds along ``axis``: the operand itself, or a weight moved into
    place (a relative-position bias table)."""
    name = ctx.initializer(i)
    return Moved(name, axis) if name is not None else weight_axis(ctx, ctx.input(i), axis)


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    shape = ctx.in_shape(0)
    rank = len(shape) if shape else None
    axis = ctx.attr("axis", -1 if ctx.opset >= 13 else 1)
    if rank is None:
        ctx.freeze_inputs()
        return
    axis %= rank
    reduced = {axis} if ctx.opset >= 13 else set(range(axis, rank))
    for k in list(layouts):
        if k in reduced:
            ctx.freeze(layouts.pop(k), "normalised over the channel axis")
    ctx.set_out(dict(layouts))


REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")


@rule(*REDUCE)
def reduce(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    shape = ctx.in_shape(0)
    if shape is None:
        ctx.freeze_inputs()
        return
    rank = len(shape)
    if ctx.node.op_type in ("ArgMax", "ArgMin"):
        axes = [ctx.attr("axis", 0)]
    else:
        axes = ctx.attr("axes")
        if axes is None and len(ctx.node.inputs) > 1 and ctx.input(1) is not None:
            const = ctx.const(1)
            if const is None:
                ctx.freeze_inputs(f"reduction axes not constant ({ctx.where})")
                return
            axes = const.tolist()
        if not axes:
            axes = [] if ctx.attr("noop_with_empty_axes", 0) else list(range(rank))
    axes = {a % rank for a in axes}
    keep = ctx.attr("keepdims", 1)
    out = {}
    for k, lay in layouts.items():
        if k in axes:
            statistic = axes == {rank - 1} and keep and _normalising_statistic(ctx)
            if statistic and ctx.state.prune_normalized:
                ctx.state.normalized.update(seg.gid for seg in lay if seg.gid is not None)
            elif statistic:
                ctx.freeze(lay, "a norm's statistic over the hidden size (--prune-normalized cuts it)")
            else:
                ctx.freeze(lay, "reduced over the channel axis")
            continue
        out[k if keep else k - sum(a < k for a in axes)] = lay
    ctx.set_out(out)


def _normalising_statistic(ctx: Ctx) -> bool:
    """Whether this ReduceMean over the hidden size is a norm's statistic, as exporters write LayerNorm below opset
    17 and RMSNorm below 23: the mean of x that x is centred by (Sub(x, mean)), or the mean of a square (Pow(t, 2),
    Mul(t, t)). ``prune_normalized`` cuts it as it cuts LayerNormalization: the student normalises over the
    channels it keeps."""
    if ctx.node.op_type != "ReduceMean":
        return False
    data = ctx.input(0)
    squared = data.producer()
    if squared is not None and squared.op_type == "Pow" and squared.inputs[1] is not None:
        exponent = squared.inputs[1].const_value
        return exponent is not None and exponent.numpy().size == 1 and float(exponent.numpy().reshape(-1)[0]) == 2.0
    if squared is not None and squared.op_type == "Mul" and squared.inputs[0] is squared.inputs[1]:
        return True
    return any(use.node.op_type == "Sub" and list(use.node.inputs) == [data, ctx.node.outputs[0]]
               for use in ctx.node.outputs[0].uses())


POOL = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


@rule(*POOL)
def pool(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    out = {}
    for k, lay in layouts.items():
        if k >= 2:
            ctx.freeze(lay, "pooled over the channel axis")
        else:
            out[k] = lay
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1].uses():
        ctx.freeze_inputs(f"pooling indices used ({ctx.where})")
        return
    ctx.set_out(out)


@rule("Pad")
def pad(ctx: Ctx) -> None:
    layouts = ctx.layouts(0)
    if not layouts:
        return
    pads = ctx.attr("pads") if ctx.opset < 11 else (None if ctx.input(1) is None else ctx.const(1))
    axes = ctx.const(3) if ctx.input(3) is not None else None
    if pads is None or (ctx.input(3) is not None and axes is None):
        ctx.freeze_inputs(f"pads not constant ({ctx.where})")
        return
    pads = list(pads.tolist() if hasattr(pads, "tolist") else pads)
    rank = len(ctx.in_shape(0) or [])
    axes = [a % rank for a in axes.tolist()] if axes is not None else list(range(rank))
    n = len(axes)
    padded = {a for j, a in enumerate(axes) if pads[j] or pads[j + n]}
    out = {}
    for k, lay in layouts.items():
        if k in padded:
            ctx.freeze(lay, "padded along the channel axis")
        else:
            out[k] = lay
    ctx.set_out(out)


@rule("Resize", "Upsample")
def resize(ctx: Ctx) -> None:
    """Channels pass when their scale is 1, or their `sizes` entry is a constant we can shrink."""
    layouts = ctx.layouts(0)
    if not layouts:
        return
    rank = len(ctx.in_shape(0) or [])
    if ctx.node.op_type == "Upsample" and ctx.opset < 9:
        scales = ctx.attr("scales")
    else:
        index = 1 if ctx.node.op_type == "Upsample" else 2
        scales = ctx.const(index) if ctx.input(index) is not None else None
    sizes = ctx.const(3) if ctx.node.op_type == "Resize" and ctx.input(3) is not None else None
    axes = [a % rank for a in ctx.attr("axes")] if ctx.attr("axes") is not None and rank else list(range(rank))
    out = {}
    for k, lay in layouts.items():
        if k not in axes:
            out[k] = lay
            continue
        position = axes.index(k)
        if scales is not None and len(scales) and float(scales[position]) == 1.0:
            out[k] = lay
        elif sizes is not None and int(sizes[position]) == total(lay) and ctx.initializer(3):
            for seg in lay:
                if seg.gid is not None:
                    ctx.state.add_edit(seg.gid, Edit("tensor", ctx.initializer(3), position), seg.block)
            out[k] = lay
        elif sizes is None and ctx.input(3) is not None and entry_follows(ctx, ctx.input(3), position, lay):
            out[k] = lay  # sizes = Concat(Shape(x)[:2], spatial): the channel entry reads x itself
        else:
            ctx.freeze(lay, "resized along the channel axis")
    ctx.set_out(out)


@rule("Shape", "Size")
def shape_only(ctx: Ctx) -> None:
    """Reads sizes, not values: shape arithmetic downstream follows the pruned sizes by itself."""
