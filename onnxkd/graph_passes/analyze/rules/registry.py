"""The rule registry: ``@rule("Op", ...)`` registers a function that moves channel layouts through one op
type, and ``Ctx`` is everything such a function sees. The family modules beside this one hold the rules."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxkd.graph_passes.analyze.layout import Layout, State

Rule = Callable[["Ctx"], None]
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
