"""A student must come from its teacher: the same inputs and outputs, so one batch feeds both and their
outputs compare element by element (names, dtypes, ranks, and every dim both models fix)."""

from __future__ import annotations

import onnx_ir as ir

from onnxkd.errors import OnnxkdError


def check_pair(teacher: ir.Model, student: ir.Model) -> None:
    for kind in ("inputs", "outputs"):
        t_values, s_values = _interface(teacher, kind), _interface(student, kind)
        if sorted(t_values) != sorted(s_values):
            raise OnnxkdError(f"the student's {kind} {sorted(s_values)} differ from the teacher's {sorted(t_values)}: "
                              "a student must come from its teacher (onnxkd prune keeps the interface)")
        for name, (t_type, t_dims) in t_values.items():
            s_type, s_dims = s_values[name]
            where = f"{kind[:-1]} {name!r}"
            if t_type != s_type:
                raise OnnxkdError(f"{where}: teacher type {t_type}, student type {s_type}")
            if t_dims is None or s_dims is None:
                continue
            if len(t_dims) != len(s_dims):
                raise OnnxkdError(f"{where}: teacher rank {len(t_dims)}, student rank {len(s_dims)}")
            for axis, (a, b) in enumerate(zip(t_dims, s_dims)):
                if isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0 and a != b:
                    raise OnnxkdError(f"{where}: dim {axis} is {a} in the teacher, {b} in the student")


def _interface(model: ir.Model, kind: str) -> dict[str, tuple[str, list | None]]:
    initializers = set(model.graph.initializers)
    values = model.graph.inputs if kind == "inputs" else model.graph.outputs
    found = {}
    for value in values:
        if value.name in initializers:
            continue  # old exporters list initializers as inputs
        dims = None if value.shape is None else [d if isinstance(d, int) else None for d in value.shape]
        found[value.name] = (str(value.type) if value.type is not None else "?", dims)
    return found
