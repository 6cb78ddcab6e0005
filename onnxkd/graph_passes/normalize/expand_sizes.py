"""An Expand's sizes as the legacy torch exporter guards them go back to the sizes themselves.

``x.expand(b, kv, rep, t, d)`` with sizes known only at run time (Llama's repeat_kv for grouped-query attention)
is exported as Expand(x, Where(Equal(s, -1), 1, s)), s a Concat flattened by a Reshape: torch's -1 ("keep this dim") becomes 1, which Expand reads
so. Where no entry of ``s`` can be -1 (every entry a non-negative constant or read from a Shape), the Where is
``s``, and the analysis can follow the constant kv entry of ``s`` when heads are cut (it froze them before).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

# Ops that only move or pick the entries of their first input (shape arithmetic).
_MOVES = {"Concat", "Unsqueeze", "Squeeze", "Reshape", "Gather", "Slice", "Cast", "Identity"}
MAX_DEPTH = 12


class ExpandSizeGuardsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type != "Expand" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
                continue
            sizes = _guarded(node.inputs[1])
            if sizes is not None and _never_negative(sizes, MAX_DEPTH):
                node.replace_input_with(1, sizes)
                modified = True
        return ir.passes.PassResult(model, modified)


def _guarded(value: ir.Value | None) -> ir.Value | None:
    """``s`` when ``value`` is Where(Equal(s, -1), 1, s) with constant -1s and 1s, else None."""
    where = value.producer() if value is not None else None
    if where is None or where.op_type != "Where" or len(where.inputs) != 3:
        return None
    condition, ones, sizes = where.inputs
    equal = condition.producer() if condition is not None else None
    if equal is None or equal.op_type != "Equal" or sizes not in equal.inputs:
        return None
    minus_ones = equal.inputs[1] if equal.inputs[0] is sizes else equal.inputs[0]
    if not (_constant_all(minus_ones, -1) and _constant_all(ones, 1)):
        return None
    flat = sizes.producer()  # the exporter's Reshape(Concat(...), [-1]) of a vector is the vector
    if flat is not None and flat.op_type == "Reshape" and _constant_all(flat.inputs[1], -1) and _is_vector(flat.inputs[0]):
        return flat.inputs[0]
    return sizes


def _is_vector(value: ir.Value | None) -> bool:
    return value is not None and value.shape is not None and len(value.shape) == 1


def _constant_all(value: ir.Value | None, number: int) -> bool:
    return value is not None and value.const_value is not None and bool(np.all(value.const_value.numpy() == number))


def _never_negative(value: ir.Value | None, depth: int) -> bool:
    """Whether every entry of ``value`` is >= 0 whatever the inputs: constants that are, dims read by Shape, and
    entries moved by shape arithmetic from those."""
    if value is None or depth == 0:
        return False
    if value.const_value is not None:
        return bool(np.all(value.const_value.numpy() >= 0))
    node = value.producer()
    if node is None:
        return False
    if node.op_type in ("Shape", "Size"):
        return True
    if node.op_type == "Concat":
        return all(_never_negative(piece, depth - 1) for piece in node.inputs)
    return node.op_type in _MOVES and _never_negative(node.inputs[0], depth - 1)
