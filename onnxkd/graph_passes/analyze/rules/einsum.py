"""The rule for Einsum (attention written with torch.einsum; Keras' EinsumDense and MultiHeadAttention as tf2onnx
writes them): a letter of the equation names the same axis in every operand and the output, so channels on
axes of one letter are the same channels. A letter kept in the output carries its channels there; one summed
against a weight slices the weight, like a MatMul's inner dim; a letter only a weight has, kept in the output,
starts a group (EinsumDense's heads and head_dim)."""

from __future__ import annotations

from onnxkd.graph_passes.analyze.rules.linear import source_group
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule


def parse(equation: str, ranks: list[int | None]) -> tuple[list[list[str]], list[str]] | None:
    """Each operand's and the output's axes as letters, ``...`` expanded to one placeholder per broadcast axis
    (aligned from the right, as numpy broadcasts); the implicit output is the ellipsis, then the letters used
    once, sorted. None when an ellipsis meets an operand of unknown rank, or a term does not fit its operand."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return None
    inputs, widest = [], 0
    for term, rank in zip(terms, ranks):
        if "..." not in term:
            if rank is not None and len(term) != rank:
                return None
            inputs.append(list(term))
            continue
        if rank is None:
            return None
        head, _, tail = term.partition("...")
        width = rank - len(head) - len(tail)
        if width < 0:
            return None
        widest = max(widest, width)
        inputs.append(list(head) + _ellipsis(width) + list(tail))
    if arrow:
        head, dots, tail = rhs.partition("...")
        output = list(head) + (_ellipsis(widest) if dots else []) + list(tail)
    else:
        letters = [c for term in terms for c in term.replace("...", "")]
        output = _ellipsis(widest) + sorted(c for c in set(letters) if letters.count(c) == 1)
    return inputs, output


def _ellipsis(width: int) -> list[str]:
    """Placeholders for ``width`` broadcast axes, the last one shared by every operand (aligned from the right)."""
    return [f"...{width - k}" for k in range(width)]


@rule("Einsum")
def einsum(ctx: Ctx) -> None:
    count = len(ctx.node.inputs)
    if not any(ctx.layouts(i) for i in range(count)) and not any(ctx.initializer(i) for i in range(count)):
        return
    shapes = [ctx.in_shape(i) for i in range(count)]
    parsed = parse(str(ctx.attr("equation", "")), [None if s is None else len(s) for s in shapes])
    if parsed is None or any(len(set(term)) != len(term) for term in [*parsed[0], parsed[1]]):
        ctx.freeze_inputs(f"Einsum equation not followed (diagonal, or an ellipsis of unknown rank) ({ctx.where})")
        return
    inputs, output = parsed
    out = {}
    for letter in dict.fromkeys(c for term in inputs for c in term):
        layout = _letter(ctx, letter, inputs, shapes, letter in output)
        if layout:
            out[output.index(letter)] = layout
    _record_spans(ctx, inputs, output, shapes)
    ctx.set_out(out)


def _record_spans(ctx: Ctx, inputs: list[list[str]], output: list[str], shapes: list) -> None:
    """A weight axis that starts a group makes as many outputs per index as the weight's later output-only axes
    hold: a head of an EinsumDense kernel [dim, heads, head_dim] is head_dim columns (what --round-to counts)."""
    for i, term in enumerate(inputs):
        name = ctx.initializer(i)
        if name is None:
            continue
        only_here = [c in output and sum(c in t for t in inputs) == 1 for c in term]
        for axis in range(len(term)):
            span = 1
            for later in range(axis + 1, len(term)):
                span *= shapes[i][later] if only_here[later] else 1
            if only_here[axis] and span > 1:
                ctx.state.spans[(name, axis)] = span


def _letter(ctx: Ctx, letter: str, inputs: list[list[str]], shapes: list, kept: bool):
    """Couple, slice or start the channels on the axes named ``letter``; the layout the output gets there."""
    axes = [(i, term.index(letter)) for i, term in enumerate(inputs) if letter in term]
    activations = [(i, a) for i, a in axes if ctx.input(i).const_value is None]
    weights = [(ctx.initializer(i), a, shapes[i][a]) for i, a in axes if ctx.input(i).const_value is not None]
    tracked = [lay for i, a in activations if (lay := ctx.layouts(i).get(a))]
    if not tracked:
        if kept and not activations and len(weights) == 1 and weights[0][0] is not None:
            name, axis, size = weights[0]
            return [source_group(ctx, size, name, axis, None)]
        return None
    base = tracked[0]
    if any(name is None for name, *_ in weights):
        ctx.freeze(base, "read with a constant that other nodes share")
        return None
    if not kept and len(activations) > 1:
        for lay in tracked:
            ctx.freeze(lay, "summed over in an Einsum between activations")
        return None
    if not kept and not weights:
        ctx.freeze(base, "summed over in an Einsum")
        return None
    for lay in tracked[1:]:
        ctx.state.unify(base, lay, ctx.where)
    untracked = [shapes[i][a] for i, a in activations if not ctx.layouts(i).get(a)]
    if any(dim != 1 for dim in untracked):
        ctx.freeze(base, "batched against channels that cannot be cut")
        return None
    for name, axis, _ in weights:
        ctx.state.slice_layout(base, name, axis, "param" if kept else "in")
    return base if kept else None
