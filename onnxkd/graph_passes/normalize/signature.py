"""Keep the declared types of graph inputs and outputs as they were before normalisation.

Shape inference may refine an output's symbolic dim to the number it always is; the model's contract
with its callers (names, dtypes, dynamic dims) is still the one the user exported.
"""

from __future__ import annotations

import onnx_ir as ir


def signature(model: ir.Model) -> dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]:
    """name -> (type, shape) of every graph input and output."""
    graph = model.graph
    values = [v for v in graph.inputs if not v.is_initializer()] + list(graph.outputs)
    return {v.name: (v.type, v.shape.copy() if v.shape is not None else None) for v in values}


class RestoreSignaturePass(ir.passes.InPlacePass):
    """Give graph inputs and outputs found by name their recorded type and shape back."""

    def __init__(self, recorded: dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]):
        super().__init__()
        self.recorded = recorded

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for value in [*model.graph.inputs, *model.graph.outputs]:
            if value.name not in self.recorded:
                continue
            type_, shape = self.recorded[value.name]
            if type_ is not None and value.type != type_:
                value.type, modified = type_, True
            if shape is not None and value.shape != shape:
                value.shape, modified = shape.copy(), True
        return ir.passes.PassResult(model, modified=modified)
