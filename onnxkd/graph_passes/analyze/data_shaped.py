"""Graph outputs whose shape follows their data, and the per-sample tensors to compare instead.

An end-to-end detector ends in NonMaxSuppression: its outputs hold as many rows as boxes survive, over the whole
batch, so a teacher and a student with equal inputs return different row counts, and no row belongs to one
sample. Such an output cannot be regressed (distillation) or compared element by element (validation). The
float tensors the data-shaped op reads (the boxes and scores before NonMaxSuppression) are per-sample and
shaped alike in both models: those are what distillation learns from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_ir as ir

# ops whose output shape is set by their input values, whatever the input shapes
DATA_SHAPED_OPS = frozenset({"NonMaxSuppression", "NonZero", "Unique", "Compress"})


@dataclass
class DataShaped:
    outputs: dict[str, str] = field(default_factory=dict)  # graph output -> the op whose data sets its shape
    # float tensor those ops read, shaped by the inputs alone -> the op reading it
    sources: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.outputs)


def data_shaped(model: ir.Model | onnx.ModelProto) -> DataShaped:
    """The graph outputs downstream of a data-shaped op (``DATA_SHAPED_OPS``; subgraphs are not entered), and the
    computed float tensors those ops read that are not downstream of one themselves (not constants)."""
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    graph = model.graph
    shaped_by: dict[str, str] = {}  # tensor -> the data-shaped op it follows from
    sources: dict[str, str] = {}
    for node in graph:
        reads = [value for value in node.inputs if value is not None]
        if node.op_type in DATA_SHAPED_OPS and node.domain in ("", "ai.onnx"):
            origin = node.op_type
            sources.update((v.name, origin) for v in reads if v.name not in shaped_by and _computed_float(v))
        else:
            origin = next((shaped_by[v.name] for v in reads if v.name in shaped_by), None)
        if origin is not None:
            shaped_by.update((value.name, origin) for value in node.outputs)
    return DataShaped({v.name: shaped_by[v.name] for v in graph.outputs if v.name in shaped_by}, sources)


def _computed_float(value: ir.Value) -> bool:
    computed = value.producer() is not None and value.producer().op_type != "Constant"
    return computed and (value.dtype is None or value.dtype.is_floating_point())  # None: not recorded in the file
