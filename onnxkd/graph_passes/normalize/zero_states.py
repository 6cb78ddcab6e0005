"""Drop the initial states of recurrent nodes (LSTM, GRU, RNN) that are zeros: an empty input means zeros.

Both torch exporters feed ``nn.LSTM`` without ``h0`` explicit zeros, built at run time to the batch's size
(``ConstantOfShape([layers, batch, hidden])`` sliced per layer, or an ``Expand`` of a zero). That tensor spells
the hidden size in a shape constant shared by every layer, so it would pin the hidden size; as an absent input it
is the same zeros, sized by onnxruntime to whatever hidden size the node has.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

RECURRENT = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}  # op -> input slots of its initial states
# ops whose output is zeros when their data input (input 0, or every input of a Concat) is
_ZERO_PRESERVING = frozenset({"Slice", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Cast", "Expand",
                              "Flatten", "Concat", "Tile"})


def _is_zeros(value: ir.Value | None, seen: dict[int, bool]) -> bool:
    if value is None:
        return False
    if id(value) in seen:
        return seen[id(value)]
    seen[id(value)] = False  # a cycle is not proof
    if value.const_value is not None:
        result = not np.any(value.const_value.numpy())
    elif (node := value.producer()) is None or node.domain not in ("", "ai.onnx"):
        result = False
    elif node.op_type == "ConstantOfShape":
        fill = node.attributes.get("value")
        result = fill is None or not np.any(fill.value.numpy())
    elif node.op_type == "Concat":
        result = all(_is_zeros(v, seen) for v in node.inputs)
    elif node.op_type in _ZERO_PRESERVING:
        result = _is_zeros(node.inputs[0], seen)
    else:
        result = False
    seen[id(value)] = result
    return result


class DropZeroInitialStatesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified, seen = False, {}
        for node in model.graph:
            for slot in RECURRENT.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ():
                if slot < len(node.inputs) and _is_zeros(node.inputs[slot], seen):
                    node.replace_input_with(slot, None)
                    modified = True
        return ir.passes.PassResult(model, modified)
