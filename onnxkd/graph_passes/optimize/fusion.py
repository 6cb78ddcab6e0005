"""One fusion: named onnxscript rewrite rules and the lowest opset its fused op exists at."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern


@dataclass(frozen=True)
class Fusion:
    name: str  # what the report calls it, e.g. "HardSwish"
    min_opset: int  # default-domain opset the fused op needs; lower models are upgraded first
    rules: Callable[[], pattern.RewriteRuleSet | tuple[pattern.RewriteRuleSet, ...]]  # a tuple: stages, in order
    anchors: frozenset[str]  # op types every match contains: a graph without any is not searched

    def may_match(self, model: ir.Model) -> bool:
        """Whether ``model`` has any of the anchor ops (without one, nothing can match)."""
        return any(node.op_type in self.anchors for node in model.graph.all_nodes())

    def apply(self, model: ir.Model) -> int:
        """Rewrite every match in place; the number of matches rewritten."""
        if not self.may_match(model):
            return 0  # the matcher costs (nodes x rule variants) even when nothing can match
        constants_second(model.graph)
        stages = self.rules()
        stages = stages if isinstance(stages, tuple) else (stages,)
        return sum(stage.apply_to_model(model) for stage in stages)


@contextlib.contextmanager
def inferred_types_filled(model: ir.Model) -> Iterator[None]:
    """Within the block, the values without a type and shape have those onnx's inference finds (rules check
    types, ranks and widths, and exporters record few intermediate shapes); after it they have none again,
    so that a rewritten model records no more than its input did."""
    from onnxkd.graph_passes.optimize.static_shapes import inferred_types

    types = inferred_types(model)
    filled = []
    for node in model.graph.all_nodes():
        for value in node.outputs:
            if value.shape is None and value.type is None and value.name in types:
                elem_type, dims = types[value.name]
                value.dtype = ir.DataType(elem_type)
                value.shape = ir.Shape(dims)
                filled.append(value)
    try:
        yield
    finally:
        for value in filled:
            value.shape = value.type = None


def constants_second(graph: ir.Graph) -> None:
    """Put the constant operand of every Add and Mul second, in place (same function: both commute).

    Rules can then be written for one operand order where a constant is involved; onnxscript's
    ``commute=True`` instead tries every order of every Add/Mul, 2^n variants at each node.
    """
    for node in graph.all_nodes():
        if node.op_type in ("Add", "Mul") and node.domain in ("", "ai.onnx") and len(node.inputs) == 2:
            first, second = node.inputs
            if _is_constant(first) and not _is_constant(second):
                node.replace_input_with(0, second)
                node.replace_input_with(1, first)


def _is_constant(value: ir.Value | None) -> bool:
    return value is not None and ir.convenience.get_const_tensor(value) is not None


FLOATS = (ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE)  # what every fused op here accepts


def floating(*constants: ir.Value | None) -> bool:
    """The constants are of a float type, and so the tensor they combine with: an integer x written as
    clip(x + 3, 0, 6) / 6 divides with truncation, and HardSigmoid has no integer form."""
    tensors = [ir.convenience.get_const_tensor(c) if c is not None else None for c in constants]
    return all(t is not None and t.dtype in FLOATS for t in tensors)


def no_broadcast(x: ir.Value, *constants: ir.Value | None) -> bool:
    """No constant adds axes to ``x`` by broadcasting: the fused op's output has x's shape, the written
    one had the constant's rank (a [1] constant makes a scalar x a vector). Unknown rank: scalars only."""
    rank = x.shape.rank() if x.shape is not None else None
    for value in constants:
        tensor = ir.convenience.get_const_tensor(value) if value is not None else None
        if tensor is None or (len(tensor.shape) > 0 and (rank is None or len(tensor.shape) > rank)):
            return False
    return True


def scalar_close(value: ir.Value | None, expected: float, rel_tol: float = 1e-4) -> bool:
    """``value`` is a one-element constant equal to ``expected`` (exporters write 1/6 or sqrt(2) rounded,
    to the constant's precision: float16's sqrt(2) is 1.07e-4 off, its 1/6 2.4e-4)."""
    if value is None:
        return False
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None or tensor.size != 1:
        return False
    array = tensor.numpy()
    if np.issubdtype(array.dtype, np.floating):
        rel_tol = max(rel_tol, float(np.finfo(array.dtype).eps))
    return bool(np.isclose(float(array.reshape(())), expected, rtol=rel_tol, atol=1e-7))


def scalar(value: ir.Value | None) -> float | None:
    """The number a one-element constant holds, else None."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    if tensor is None or tensor.size != 1:
        return None
    return float(tensor.numpy().reshape(()))


def reduced_axes(node: ir.Node) -> list[int] | None:
    """The axes a Reduce* node reduces, from its attribute or (opset 18) its constant second input; None
    when they are not known (or when it reduces every axis: no axes given)."""
    axes = node.attributes.get_ints("axes", None)
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        tensor = ir.convenience.get_const_tensor(node.inputs[1])
        axes = None if tensor is None else [int(a) for a in tensor.numpy().reshape(-1)]
    return None if axes is None else list(axes)
