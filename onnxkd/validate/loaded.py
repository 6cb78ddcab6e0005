"""A model as validation needs it: the proto for static counts, what onnxruntime loads, and its identity."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxkd import model as model_io
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.pairing import paired_teacher
from onnxkd.model import sha256_bytes, sha256_file


@dataclass
class LoadedModel:
    label: str  # "teacher" / "student", for error messages
    proto: onnx.ModelProto
    model: ir.Model
    source: str | bytes  # a path keeps external data loadable by onnxruntime
    path: str
    sha256: str  # of the .onnx file (external weight files are counted in size_bytes, not hashed)
    size_bytes: int


def load_model(model: model_io.ModelLike, label: str) -> LoadedModel:
    try:
        loaded = model_io.load(model)
    except OnnxkdError as exc:
        raise OnnxkdError(f"{label} {exc}") from None
    proto = ir.to_proto(loaded)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        size = path.stat().st_size + sum(f.stat().st_size for f in _external_files(loaded, path.parent))
        return LoadedModel(label, proto, loaded, model_io.session_source(path), str(path), sha256_file(path), size)
    source = model_io.session_source(loaded)  # the weights inside: no external-data path left to resolve
    if isinstance(source, bytes):
        return LoadedModel(label, proto, loaded, source, "<in memory>", sha256_bytes(source), len(source))
    # written out for onnxruntime (large weights): hashed with its weights, as its bytes would have been
    return LoadedModel(label, proto, loaded, source, "<in memory>", model_io.sha256_of(source),
                       model_io.initializer_bytes(loaded))


def paired(teacher: LoadedModel, student: LoadedModel) -> tuple[LoadedModel, list[str]]:
    """``teacher`` under the student's names where a student exported by another tool names its inputs and outputs
    otherwise (``paired_teacher``: paired by position), with a note per kind so paired; its identity (path,
    hash, size) stays the file's. Only the interface is renamed: a renamed teacher is handed to onnxruntime from
    memory, which a teacher exported apart from its student (the same output names, other names inside) must not
    cost."""
    renamed, notes = paired_teacher(teacher.model, student.model, compared=False)
    if renamed is teacher.model:
        return teacher, notes
    return replace(teacher, model=renamed, proto=ir.to_proto(renamed), source=model_io.session_source(renamed)), notes


def _external_files(model: ir.Model, folder: Path) -> set[Path]:
    files = set()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            candidate = Path(tensor.base_dir or folder) / tensor.location
            if candidate.exists():
                files.add(candidate.resolve())
    return files
