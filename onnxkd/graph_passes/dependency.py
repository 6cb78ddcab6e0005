"""Dependency analysis: walk the graph once in topological order and build the channel groups.

Sources (Conv, ConvTranspose, Gemm, MatMul with a constant weight) start a group on their output
channel axis; the rules in ``rules_*.py`` move layouts through every other op, couple groups
(residual adds, SE gates, attention heads) and record the initializer slices and constant edits.
An op without a rule freezes whatever reaches it: the analysis never guesses.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxkd.graph_passes.groups import ChannelGroup, Edit
from onnxkd.graph_passes.layout import Layout, State, total

Rule = Callable[["Ctx"], None]
# Set to "1" (the test suite does) to let a rule's exception propagate instead of freezing its inputs.
STRICT_ENV = "ONNXKD_STRICT_ANALYSIS"
RULES: dict[str, Rule] = {}


def rule(*op_types: str):
    def register(fn: Rule) -> Rule:
        for op in op_types:
            RULES[op] = fn
        return fn

    return register


class Ctx:
    """What a rule sees: the node, its inputs' layouts/shapes/constants, and the analysis state."""

    def __init__(self, state: State, node: ir.Node, opset: int):
        self.state, self.node, self.opset = state, node, opset
        self.where = f"{node.op_type} at node {node.name or node.outputs[0].name!r}"

    # inputs / outputs
    def input(self, i: int) -> ir.Value | None:
        return self.node.inputs[i] if i < len(self.node.inputs) else None

    def layouts(self, i: int) -> dict[int, Layout]:
        value = self.input(i)
        return self.state.get(value.name) if value is not None else {}

    def shape(self, value: ir.Value | None) -> list | None:
        """Static dims where known: the model's, or inferred with dynamic input dims at stand-in values."""
        if value is None:
            return None
        if value.const_value is not None:
            return list(value.const_value.shape)
        concrete = self.state.concrete.get(value.name)
        if concrete is not None:
            return list(concrete)
        if value.shape is None:
            return None
        return [d if isinstance(d, int) else getattr(d, "value", None) for d in value.shape]

    def in_shape(self, i: int) -> list | None:
        return self.shape(self.input(i))

    def out_shape(self, i: int = 0) -> list | None:
        return self.shape(self.node.outputs[i]) if i < len(self.node.outputs) else None

    def folded(self, value: ir.Value | None) -> np.ndarray | None:
        """A constant's value, or a small integer tensor computed from shapes (folded at stand-in sizes)."""
        if value is None:
            return None
        if value.const_value is not None:
            return value.const_value.numpy()
        return self.state.concrete_values.get(value.name)

    def const(self, i: int) -> np.ndarray | None:
        value = self.input(i)
        if value is None or value.const_value is None:
            return None
        return value.const_value.numpy()

    def initializer(self, i: int) -> str | None:
        """Name of input i if it is an initializer this node alone reads (safe to slice)."""
        value = self.input(i)
        if value is None or not value.is_initializer() or value.const_value is None:
            return None
        if len({id(use.node) for use in value.uses()}) != 1 or value.is_graph_output():
            return None
        return value.name

    def attr(self, name: str, default=None):
        attr = self.node.attributes.get(name)
        return default if attr is None else attr.value

    def set_out(self, layouts: dict[int, Layout], i: int = 0) -> None:
        if i < len(self.node.outputs):
            self.state.set(self.node.outputs[i].name, layouts)

    def freeze_inputs(self, reason: str | None = None) -> None:
        reason = reason or f"consumed by {self.where}"
        for value in self.node.inputs:
            if value is not None:
                self.state.freeze_value(value.name, reason)

    def freeze(self, layout: Layout | None, why: str) -> None:
        self.state.freeze_layout(layout, f"{why} ({self.where})")


def unknown_op(ctx: Ctx) -> None:
    if any(ctx.layouts(i) for i in range(len(ctx.node.inputs))):
        ctx.freeze_inputs()


def analyze(model: ir.Model, *, prune_normalized: bool = False) -> list[ChannelGroup]:
    """Channel groups of a prepared model (constants as initializers, untied, shapes inferred).

    ``prune_normalized``: hidden sizes normalised by LayerNormalization (a transformer's residual
    stream) become groups too, with embedding tables as their producers (see rules_norm.layer_norm).
    """
    _load_rules()
    from onnxkd.model import opset_of

    from onnxkd.graph_passes.concrete_shapes import concrete_shapes

    opset = opset_of(model)
    state = State(prune_normalized)
    state.concrete, state.concrete_values = concrete_shapes(model)
    state.dynamic_axes = _dynamic_axes(model)
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
    return state.finish()


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


def _load_rules() -> None:
    from onnxkd.graph_passes import rules_elementwise, rules_linear, rules_norm, rules_reshape, rules_slicing  # noqa: F401
