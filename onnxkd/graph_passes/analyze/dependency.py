"""Dependency analysis: walk the graph once in topological order and build the channel groups.

Sources (Conv, ConvTranspose, Gemm, MatMul with a constant weight) start a group on their output
channel axis; the rules in ``rules/`` (one module per op family) move layouts through every other op, couple groups
(residual adds, SE gates, attention heads) and record the initializer slices and constant edits.
An op without a rule freezes whatever reaches it: the analysis never guesses.
"""

from __future__ import annotations

import os

import onnx_ir as ir

from onnxkd.graph_passes.analyze import rules  # noqa: F401  (registers every rule)
from onnxkd.graph_passes.analyze.balance import resolve
from onnxkd.graph_passes.analyze.groups import ChannelGroup, Edit
from onnxkd.graph_passes.analyze.layout import State, total
from onnxkd.graph_passes.analyze.rules.registry import RULES, Ctx
from onnxkd.graph_passes.analyze.rules.weight_paths import settle

# Set to "1" (the test suite does) to let a rule's exception propagate instead of freezing its inputs.
STRICT_ENV = "ONNXKD_STRICT_ANALYSIS"


def unknown_op(ctx: Ctx) -> None:
    if any(ctx.layouts(i) for i in range(len(ctx.node.inputs))):
        ctx.freeze_inputs()


def analyze(model: ir.Model, *, prune_normalized: bool = False) -> list[ChannelGroup]:
    """Channel groups of a prepared model (constants as initializers, untied, shapes inferred).

    ``prune_normalized``: hidden sizes normalised by LayerNormalization (a transformer's residual
    stream) become groups too, with embedding tables as their producers (see rules.norm.layer_norm).
    """
    from onnxkd.graph_passes.analyze.concrete_shapes import concrete_shapes
    from onnxkd.model import opset_of

    opset = opset_of(model)
    state = State(prune_normalized)
    state.concrete, state.concrete_values = concrete_shapes(model)
    state.dynamic_axes = _dynamic_axes(model)
    _walk(model, state, opset)
    settle(state)  # weights moved into place and shared: cut only where every reader cuts them
    resolve(state)  # conv groups kept at equal counts, now that every coupling is known
    return state.finish()


def _walk(model: ir.Model, state: State, opset: int) -> None:
    graph = model.graph
    main_nodes = set()
    for node in graph:
        main_nodes.add(id(node))
        ctx = Ctx(state, node, opset)
        if node.domain not in ("", "ai.onnx"):
            unknown_op(ctx)
            continue
        try:
            RULES.get(node.op_type, unknown_op)(ctx)
        except Exception as exc:  # a rule that meets a graph it did not foresee freezes, never guesses
            if os.environ.get(STRICT_ENV) == "1":
                raise  # the test suite: an unexpected rule exception is a bug to see, not a group to freeze
            ctx.freeze_inputs(f"cannot analyse {ctx.where} ({type(exc).__name__}: {exc})")
            for out in node.outputs:
                state.layouts.pop(out.name, None)
    for value in graph.outputs:
        state.freeze_value(value.name, f"graph output {value.name!r}")
    _pin_shape_reads(graph, state)
    produced = {out.name: out for node in graph for out in node.outputs}
    for name in list(state.layouts):
        value = produced.get(name)
        if value is not None and any(id(use.node) not in main_nodes for use in value.uses()):
            state.freeze_value(name, f"{name!r} is read inside a subgraph")


def _dynamic_axes(model: ir.Model) -> dict[str, set[int]]:
    """Tensor name -> axes whose extent is not static in the model (channel positions there are not recorded)."""
    found = {}
    for node in model.graph:
        for value in node.outputs:
            if value.shape is None:
                found[value.name] = None  # rank unknown: every axis
            else:
                axes = {k for k, d in enumerate(value.shape) if not (isinstance(d, int) and d > 0)}
                if axes:
                    found[value.name] = axes
    return found


def _pin_shape_reads(graph: ir.Graph, state: State) -> None:
    """Shape(x) of a LayerNorm'd width (legacy exports compute head_dim = Shape(x)[-1] // heads) keeps
    reading the original size once the width is cut; a read a rule relies on following freezes instead."""
    normalized = {state.find(g) for g in state.normalized}
    if not normalized:
        return
    for node in graph:
        if node.op_type not in ("Shape", "Size") or node.inputs[0] is None:
            continue
        x = node.inputs[0]
        rank = len(x.shape) if x.shape is not None else None
        for k, lay in state.get(x.name).items():
            segs = [s for s in lay if s.gid is not None and state.find(s.gid) in normalized]
            if not segs:
                continue
            if node.op_type == "Size" or rank is None or (x.name, k) in state.followed_sizes:
                state.freeze_layout(segs, f"its size is read by {node.op_type} at node {node.name!r}")
                continue
            start = node.attributes["start"].value if "start" in node.attributes else 0
            end = node.attributes["end"].value if "end" in node.attributes else rank
            start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
            if start <= k < end:
                for seg in segs:
                    state.add_edit(seg.gid, Edit("pin", node.name, k - start, total(lay)))
