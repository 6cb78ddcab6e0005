"""Loading and saving models: every stage reads ONNX and writes ONNX through here.

Inputs are never modified; outputs are written atomically (temp file in the target folder, then
``os.replace``) so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Union

import onnx
import onnx_ir as ir

from onnxkd.errors import OnnxkdError

ModelLike = Union[str, os.PathLike, onnx.ModelProto, ir.Model]

# Above this many bytes of initializers a model must keep its weights in an external file (protobuf limit).
PROTOBUF_LIMIT = 2**31 - 2**20


def load(model: ModelLike) -> ir.Model:
    """Return an ``onnx_ir.Model`` for a path, a ModelProto or an ir.Model (returned as is).

    External data is read lazily (memory-mapped) by onnx-ir, so a > 2 GB model is not copied twice.
    """
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return ir.from_proto(model)
    if isinstance(model, (str, os.PathLike)):
        return _load_path(Path(model))
    raise OnnxkdError(f"expected a path, onnx.ModelProto or onnx_ir.Model, got {type(model).__name__}")


def _load_path(path: Path) -> ir.Model:
    if not path.exists():
        raise OnnxkdError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxkdError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise OnnxkdError(f"{path}: empty file, not an ONNX model")
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or others depending on the bytes
        raise OnnxkdError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None
    if len(model.graph) == 0 and len(model.graph.outputs) == 0:
        raise OnnxkdError(f"{path}: not a valid ONNX model (no graph)")
    return model


def check_output_path(output: str | os.PathLike, inputs: dict[str, object], flag: str = "-o") -> Path:
    """Refuse, before any work, an output path that is one of the ``inputs`` (label -> path or in-memory
    model), a directory, or in a folder that does not exist or cannot be written."""
    output = Path(output)
    for label, source in inputs.items():
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() and \
                (Path(source).resolve() == output.resolve() or (output.exists() and os.path.samefile(source, output))):
            raise OnnxkdError(f"{flag} {output}: the output path is the {label}; choose another path")
    if output.is_dir():
        raise OnnxkdError(f"{flag} {output}: is a directory, expected a file path")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise OnnxkdError(f"{flag} {output}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxkdError(f"{flag} {output}: output folder {folder} is not writable")
    return output


def graph_copy(model: ir.Model) -> ir.Model:
    """A copy whose graph may be changed freely; the tensors are shared (never mutated): no weight is copied."""
    try:
        return model.clone()
    except Exception:  # noqa: BLE001  (onnx-ir cannot clone graphs whose nodes are out of order)
        return ir.from_proto(ir.to_proto(model))


def to_proto(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto of the model (for onnxruntime, the checker and onnxsim)."""
    if isinstance(model, onnx.ModelProto):
        return model
    return ir.to_proto(load(model))


def save(model: ir.Model | onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write the model atomically; weights go to ``<name>.data`` when asked or when above 2 GB."""
    path = Path(path)
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    if external_data is None:
        external_data = _initializer_bytes(model) > PROTOBUF_LIMIT
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OnnxkdError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxkdError(f"{path}: output folder {folder} is not writable")
    data_name = path.name + ".data"
    try:
        _write_atomically(model, folder, path.name, data_name if external_data else None)
    except OSError as exc:
        raise OnnxkdError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _write_atomically(model: ir.Model, folder: Path, name: str, data_name: str | None) -> None:
    external_data = data_name is not None
    with _atomic_paths(folder, name, data_name) as (tmp_model, tmp_data):
        if external_data:
            # onnx-ir records the data file's name in the model; it must be the final one, not the temp one.
            ir.save(model, tmp_model, external_data=data_name + ".tmp")
            _rename_external_data(tmp_model, data_name + ".tmp", data_name, tmp_data)
        else:
            ir.save(model, tmp_model)


@contextlib.contextmanager
def _atomic_paths(folder: Path, name: str, data_name: str | None):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_model = Path(tmp)
    tmp_data = folder / (data_name + ".tmp") if data_name else None
    try:
        yield tmp_model, tmp_data
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        mode = 0o666 & ~_umask()
        for written in (tmp_model, tmp_data):
            if written is not None and written.exists():
                os.chmod(written, mode)
        if tmp_data is not None:
            os.replace(tmp_data, folder / data_name)
        os.replace(tmp_model, folder / name)
    finally:
        for leftover in (tmp_model, tmp_data):
            if leftover is not None and leftover.exists():
                leftover.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _rename_external_data(model_path: Path, old: str, new: str, data_path: Path) -> None:
    proto = onnx.load(str(model_path), load_external_data=False)
    for tensor in _all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    onnx.save(proto, str(model_path))


def _all_tensors(proto: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def _initializer_bytes(model: ir.Model) -> int:
    total = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None:
            total += tensor.nbytes
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def has_external_data(model: ModelLike) -> bool:
    """Whether a model file keeps its weights in external data files (its outputs then do too)."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001  (an unreadable file is reported by whoever loads it)
        return False
    return any(uses_external_data(t) for t in proto.graph.initializer)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(model: ModelLike) -> str:
    """The identity of a model: its file's SHA-256, or that of its serialised proto when in memory."""
    if isinstance(model, (str, os.PathLike)):
        return sha256_file(model)
    return sha256_bytes(to_proto(model).SerializeToString())


def opset_of(model: ir.Model, domain: str = "") -> int:
    """The model's opset version for a domain ('' = ai.onnx)."""
    version = model.opset_imports.get(domain)
    if version is None and domain in ("", "ai.onnx"):
        version = model.opset_imports.get("ai.onnx", model.opset_imports.get("", 1))
    return int(version or 1)
