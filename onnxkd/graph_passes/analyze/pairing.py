"""A student must fit its teacher: the same inputs and outputs, so one batch feeds both and their outputs
compare element by element (dtypes, ranks, and every dim both models fix).

The names may differ: a student pruned with another tool and exported again gets the names its exporter gives
(torch's legacy exporter numbers unnamed values, dynamo names them after ops). Where no input or output name is
shared, they are paired by position. So are the tensors distilled in an output's place (``compared_tensors``:
the logits behind a Softmax, the tensors a NonMaxSuppression reads, the heads a YOLO output is decoded from),
output by output, even when the outputs share their names. Outputs of the same names in another order are put in
the student's order. The teacher, which is only read, takes the student's names and order in memory
(``paired_teacher``):
distill trains and writes the student under its own, and validate feeds and compares both under them.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.classifier_heads import scores_behind
from onnxkd.graph_passes.analyze.data_shaped import data_shaped
from onnxkd.graph_passes.analyze.output_parts import decodes
from onnxkd.model import graph_copy

KINDS = ("inputs", "outputs")


def paired_teacher(teacher: ir.Model, student: ir.Model, compared: bool = True) -> tuple[ir.Model, list[str]]:
    """``teacher`` under the student's names (a renamed copy where they differ), and a note per kind of interface
    value paired by position; one error line where the two cannot be paired. ``compared=False``: the inputs and
    outputs only (what validate feeds and compares), not the tensors distilled in the outputs' place."""
    renames: dict[str, str] = {}  # teacher name -> student name
    notes = []
    reorder = False  # the same output names in another order: the teacher's are put in the student's
    for kind in KINDS:
        t_values, s_values = _interface(teacher, kind), _interface(student, kind)
        reorder |= kind == "outputs" and list(t_values) != list(s_values) and sorted(t_values) == sorted(s_values)
        teacher_names = {}  # student name -> teacher name, where they differ
        if list(t_values) != list(s_values) and sorted(t_values) != sorted(s_values):
            if set(t_values) & set(s_values) or len(t_values) != len(s_values):
                raise OnnxkdError(f"the student's {kind} {list(s_values)} differ from the teacher's {list(t_values)}: "
                                  "a student must fit its teacher (onnxkd prune keeps the interface)")
            pairs = dict(zip(t_values, s_values))
            renames.update(pairs)
            teacher_names = {s: t for t, s in pairs.items()}
            notes.append(f"the student's {kind} have other names than the teacher's: paired by position ("
                         + ", ".join(f"teacher {t!r} = student {s!r}" for t, s in pairs.items()) + ")")
            t_values = {pairs[name]: value for name, value in t_values.items()}
        _check_values(kind, t_values, s_values, teacher_names)
    if compared:
        renames.update(_compared_pairs(teacher, student, renames))
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames and not reorder:
        return teacher, notes
    renamed = graph_copy(teacher)
    _rename(renamed, renames)
    if reorder:  # what compares outputs by position (onnxruntime's lists) then pairs them by name
        by_name = {value.name: value for value in renamed.graph.outputs}
        order = [by_name[value.name] for value in student.graph.outputs if value.name in by_name]
        renamed.graph.outputs.clear()
        renamed.graph.outputs.extend(order)
    return renamed, notes


def _compared_pairs(teacher: ir.Model, student: ir.Model, renames: dict[str, str]) -> dict[str, str]:
    """Teacher tensor -> the student's tensor distilled in the same place: the scores behind each output, and
    the tensors the data-shaped outputs are computed from (in order, where both models have as many)."""
    pairs = {}
    t_scores = {renames.get(out, out): tensor for out, tensor in scores_behind(teacher).items()}
    for output, s_tensor in scores_behind(student).items():
        if output in t_scores:
            pairs[t_scores[output]] = s_tensor
    decoded = lambda m: [t for d in decodes(m).values() for t in d.tensors]  # noqa: E731
    for found in (lambda m: list(data_shaped(m).sources), decoded):
        t_sources, s_sources = found(teacher), found(student)
        if len(t_sources) == len(s_sources):
            pairs.update(zip(t_sources, s_sources))
    return pairs


def _check_values(kind: str, t_values: dict, s_values: dict, teacher_names: dict[str, str]) -> None:
    """``t_values`` keyed by the student's names; ``teacher_names``: student name -> teacher's, where they differ."""
    for name, (t_type, t_dims) in t_values.items():
        s_type, s_dims = s_values[name]
        where = f"{kind[:-1]} {name!r}"
        if name in teacher_names:
            where = f"{kind[:-1]} {teacher_names[name]!r} (the student's {name!r})"
        if t_type != s_type:
            raise OnnxkdError(f"{where}: teacher type {t_type}, student type {s_type}")
        if t_dims is None or s_dims is None:
            continue
        if len(t_dims) != len(s_dims):
            raise OnnxkdError(f"{where}: teacher rank {len(t_dims)}, student rank {len(s_dims)}")
        for axis, (a, b) in enumerate(zip(t_dims, s_dims)):
            if isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0 and a != b:
                raise OnnxkdError(f"{where}: dim {axis} is {a} in the teacher, {b} in the student")


def _rename(model: ir.Model, renames: dict[str, str]) -> None:
    """Give the values of ``model`` named as the keys the names they map to; a value already holding one of the new
    names (a tensor inside the teacher that happens to share a student's name) is renamed out of the way first."""
    named = {value.name: value for node in model.graph for value in node.outputs if value.name}
    named.update({value.name: value for value in model.graph.inputs if value.name})
    named.update(model.graph.initializers)
    moving = [named[old] for old in renames]
    for new in renames.values():
        clash = named.get(new)
        if clash is not None and clash.name not in renames:
            clash.name = _unused(f"{new}__teacher", named)
            named[clash.name] = clash
    for value, new in zip(moving, renames.values()):
        value.name = new


def _unused(name: str, taken: dict) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    return candidate


def _interface_values(model: ir.Model, kind: str) -> list[ir.Value]:
    initializers = set(model.graph.initializers)
    values = model.graph.inputs if kind == "inputs" else model.graph.outputs
    return [value for value in values if value.name not in initializers]  # old exporters list initializers


def _interface(model: ir.Model, kind: str) -> dict[str, tuple[str, list | None]]:
    found = {}
    for value in _interface_values(model, kind):
        dims = None if value.shape is None else [d if isinstance(d, int) else None for d in value.shape]
        found[value.name] = (str(value.type) if value.type is not None else "?", dims)
    return found
