"""Loading and saving models: every stage reads ONNX and writes ONNX through here.

Inputs are never modified; outputs are written atomically (temp file in the target folder, then
``os.replace``) so an interrupted run leaves no half-written file.

External data (torch's default export writes ``model.onnx`` + ``model.onnx.data``) follows one rule:
a model loaded from a file keeps the absolute folder of its weights, whatever the current folder is;
every save writes a self-contained pair named after the output (``out.onnx`` + ``out.onnx.data``), never
a reference to another model's weights file; and whatever hands an in-memory model to onnxruntime or the
ONNX checker gives it the weights themselves (``session_source``, ``weights_inside``), never a relative
path that would resolve against the current folder.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
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
        return _unique_node_names(_in_order(_dynamic_dims(ir.from_proto(model))))
    if isinstance(model, (str, os.PathLike)):
        return _unique_node_names(_in_order(_dynamic_dims(_load_path(Path(model)))))
    raise OnnxkdError(f"expected a path, onnx.ModelProto or onnx_ir.Model, got {type(model).__name__}")


def _load_path(path: Path) -> ir.Model:
    if not path.exists():
        raise OnnxkdError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxkdError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise OnnxkdError(f"{path}: empty file, not an ONNX model")
    # an absolute path: external weights then resolve against the model's folder from any folder; symlinks not
    # followed: a hub cache links model.onnx and model.onnx.data to blobs of other names, and the weights are
    # beside the link, as onnxruntime finds them
    try:
        model = ir.load(path.absolute())
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or others depending on the bytes
        raise OnnxkdError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None
    if len(model.graph) == 0 and len(model.graph.outputs) == 0:
        raise OnnxkdError(f"{path}: not a valid ONNX model (no graph)")
    model.meta[SOURCE_PATH] = str(path)  # in memory only: how errors name a model loaded once and passed along
    _follow_weight_links(model)
    _check_weight_files(model, path)
    return _attribute_tensors_inside(_small_weights_inside(model))


def _follow_weight_links(model: ir.Model) -> None:
    """External weights whose file is a symlink out of the model's folder (a hub cache: ``model.onnx.data`` ->
    ``../../blobs/<hash>``) read from the file it links to: onnx-ir refuses a link that leaves the folder, as a
    guard against path traversal, where onnxruntime follows it. The user's own link is the user's choice."""
    def relinked(tensor: ir.ExternalTensor) -> ir.ExternalTensor:
        link = Path(tensor.base_dir) / tensor.location
        if not tensor.base_dir or not link.is_symlink() or not link.exists():
            return tensor
        target = link.resolve()
        return ir.ExternalTensor(target.name, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                                 name=tensor.name, doc_string=tensor.doc_string,
                                 metadata_props=dict(tensor.metadata_props), base_dir=target.parent)

    for value in _external_values(model):
        value.const_value = relinked(value.const_value)
    _replace_external_attribute_tensors(model, relinked)


def _check_weight_files(model: ir.Model, path: Path) -> None:
    """Refuse, naming the file, a model whose external weights are not where it says (moved without its
    ``.data`` file) or not all there (a truncated copy): onnx-ir reads them lazily, so this would otherwise
    surface as an internal error at the first weight read."""
    needed: dict[Path, int] = {}
    for tensor in [value.const_value for value in _external_values(model)] + _external_attribute_tensors(model):
        file = Path(tensor.path)
        needed[file] = max(needed.get(file, 0), (tensor.offset or 0) + (tensor.length or tensor.nbytes))
    for file, size in needed.items():
        if not file.is_file():
            # named as the model names it (weights/w.bin: a subfolder beside the model), where it was looked for
            named = os.path.relpath(file, Path(path).absolute().parent)
            where = "beside it" if os.sep not in named else f"in {os.path.dirname(named)}/ beside it"
            raise OnnxkdError(f"{path}: its weights are in {named}, which is not {where} ({file}): "
                              f"move or copy {named} with the model")
        if file.stat().st_size < size:
            raise OnnxkdError(f"{path}: its weights file {file.name} holds {file.stat().st_size:,} bytes, fewer than "
                              f"the {size:,} the model reads from it (a truncated copy?)")


# External tensors up to this size are read in at load. Exporters that put every tensor in the weights file
# (onnx's size_threshold=0) also put shape constants there (Reshape targets, Slice bounds, reduction
# axes), and onnx's shape inference, which the analysis and MACs rely on, cannot read external data. It
# keeps the initializers below 1000 bytes in the protos it receives (onnx_ir's call_onnx_api).
SMALL_TENSOR_BYTES = 1024


SOURCE_PATH = "onnxkd.source_path"


def describe(model: ModelLike) -> str:
    """How an error names a model: its file (also once loaded), else its graph's name."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, ir.Model) and model.meta.get(SOURCE_PATH):
        return model.meta[SOURCE_PATH]
    graph = model.graph
    return graph.name or "the model"


def check_output_path(output: str | os.PathLike, inputs: dict[str, object], flag: str = "-o",
                      data: dict[str, object] | None = None) -> Path:
    """Refuse, before any work, an output path that is one of the ``inputs`` (label -> path or in-memory
    model) or of their weights files, one of the ``data`` files (label -> path or arrays), a directory, or in a
    folder that does not exist or cannot be written."""
    output = Path(output)
    given = [(label, source, True) for label, source in inputs.items()]
    given += [(label, source, False) for label, source in (data or {}).items()]
    for label, source, is_model in given:  # (a new output's own weights file never takes an existing name)
        if not isinstance(source, (str, os.PathLike)) or not Path(source).exists():
            continue
        # an output that does not exist yet is none of a model's files: its weights files are read only then;
        # a data file is compared as the file it is, never read as a model
        weights = _weight_files(Path(source)) if is_model and output.exists() else []
        for own in [Path(source), *weights]:
            if _same_file(own, output):
                what = f"the {label}" if own == Path(source) else f"the weights file of the {label} ({own.name})"
                raise OnnxkdError(f"{flag} {output}: the output path is {what}; choose another path")
    if output.is_dir():
        raise OnnxkdError(f"{flag} {output}: is a directory, expected a file path")
    folder = output.parent if str(output.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OnnxkdError(f"{flag} {output}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise OnnxkdError(f"{flag} {output}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxkdError(f"{flag} {output}: output folder {folder} is not writable")
    return output


GRAPH_ONLY_BYTES = 64 << 20


def _weight_files(path: Path) -> list[Path]:
    """The external weights files a model file reads, as it names them (none when it cannot be read: loading
    reports that)."""
    try:
        model = ir.load(path.absolute())
    except Exception:  # noqa: BLE001  (not a model: the command's load says so, naming the problem)
        return []
    return sorted({Path(value.const_value.path) for value in _external_values(model)})


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def graph_copy(model: ir.Model) -> ir.Model:
    """A copy whose graph may be changed freely; the tensors are shared (never mutated): no weight is copied."""
    try:
        return model.clone()
    except Exception:  # noqa: BLE001  (onnx-ir cannot clone graphs whose nodes are out of order)
        return copy_via_proto(model)


def copy_via_proto(model: ir.Model) -> ir.Model:
    """A copy made through protobuf (it takes graphs ``clone`` cannot); the initializers keep the original
    tensor objects, so external weights still resolve against their own folder, not the current one."""
    copy = ir.from_proto(ir.to_proto(model))
    for name, value in copy.graph.initializers.items():
        original = model.graph.initializers.get(name)
        if original is not None and original.const_value is not None:
            value.const_value = original.const_value
    return copy


def _external_values(model: ir.Model) -> list[ir.Value]:
    return [value for graph in model.graphs() for value in graph.initializers.values()
            if isinstance(value.const_value, ir.ExternalTensor)]


def has_external_tensors(model: ir.Model) -> bool:
    """Whether some initializer of the in-memory model still reads its bytes from a weights file."""
    return bool(_external_values(model))


def _small_weights_inside(model: ir.Model) -> ir.Model:
    for value in _external_values(model):
        if value.const_value.nbytes <= SMALL_TENSOR_BYTES:
            value.const_value = _in_memory(value.const_value)
    return model


def _external_attributes(model: ir.Model) -> list[tuple[ir.Node, str, ir.Attr]]:
    """(node, name, attribute) of every tensor attribute whose bytes are in a weights file."""
    return [(node, name, attr) for graph in model.graphs() for node in graph for name, attr in node.attributes.items()
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.ExternalTensor)]


def _external_attribute_tensors(model: ir.Model) -> list[ir.ExternalTensor]:
    return [attr.value for _, _, attr in _external_attributes(model)]


def _attribute_tensors_inside(model: ir.Model) -> ir.Model:
    """Constant nodes' tensors saved in the weights file (onnx's ``convert_attribute=True``) read in now: every
    pass that goes through a proto (the opset converter, onnxsim, shape inference) would lose the folder they
    resolve against, and read them from the current one."""
    _replace_external_attribute_tensors(model, _in_memory)
    return model


def _replace_external_attribute_tensors(model: ir.Model, replace: Callable[[ir.ExternalTensor], ir.TensorProtocol]):
    for node, name, attr in _external_attributes(model):
        node.attributes[name] = ir.AttrTensor(name, replace(attr.value), doc_string=attr.doc_string)


def _in_memory(tensor: ir.ExternalTensor) -> ir.Tensor:
    # a copy: a view would pin the memory map, and onnx-ir cannot release a map with views on it
    return ir.Tensor(np.array(tensor.numpy(), copy=True), dtype=tensor.dtype, name=tensor.name)


def weights_inside(model: ir.Model, max_bytes: int | None = None) -> ir.Model:
    """The model with its external weights read into memory (those of at most ``max_bytes``, if given), on a
    copy when there are any: what the ONNX checker and onnxruntime get for an in-memory model, so that no
    external-data path in it resolves against the current folder."""
    values = [v for v in _external_values(model) if max_bytes is None or v.const_value.nbytes <= max_bytes]
    if not values:
        return model
    names = {v.name for v in values}
    copy = graph_copy(model)
    for graph in copy.graphs():
        for value in graph.initializers.values():
            if value.name in names and isinstance(value.const_value, ir.ExternalTensor):
                value.const_value = _in_memory(value.const_value)
    return copy


# An in-memory model goes to onnxruntime as serialized bytes only while its weights are small. The bytes cost
# three to five times the weights at once (the tensors read, the proto, its serialization): checking a 269 MB
# MLP's optimized copy peaked 1.3 GB above where it started, and 0.34 GB given as a file, which onnx-ir writes
# one tensor at a time.
SESSION_BYTES_IN_MEMORY = 64 << 20


class _SessionCopyPath(str):
    """The path of a model written out for onnxruntime. Its temp folder is removed when the last reference to
    the path goes (or at exit): a long run (quantize's candidates, validate's sessions) would otherwise keep a
    copy of every model it looked at on disk until it ends. onnxruntime has read the weights by then."""


def session_source(model: ModelLike) -> str | bytes:
    """What ``onnxruntime.InferenceSession`` is given for the model: a file's path (onnxruntime resolves its
    external data next to it), or, for an in-memory model, the bytes with every weight inside; above
    SESSION_BYTES_IN_MEMORY of weights, a self-contained copy in a temp folder that lives as long as the
    returned path."""
    if isinstance(model, (str, os.PathLike)):
        return str(Path(model).absolute())  # not resolved: weights beside a symlinked model are found by its path
    model = load(model)
    if initializer_bytes(model) <= SESSION_BYTES_IN_MEMORY:
        return ir.to_proto(weights_inside(model)).SerializeToString()
    folder = tempfile.mkdtemp(prefix="onnxkd-session-")
    path = _SessionCopyPath(save(model, Path(folder) / "model.onnx", external_data=True))
    weakref.finalize(path, shutil.rmtree, folder, ignore_errors=True)
    return path


def onnxruntime_failure(model: ModelLike, feeds: dict[str, np.ndarray]) -> str | None:
    """The first line of onnxruntime's error where it cannot run ``model`` on ``feeds``, else None: the judge of
    whether data fits a model, for the layers that do not run onnxruntime themselves (distill's first run on
    the data, ``distill/data_fit.py``). onnxruntime is imported here only when asked."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(session_source(model), providers=["CPUExecutionProvider"])
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime's own: a shape mismatch inside the graph
        return _first_line(exc)
    return None


def _in_order(model: ir.Model) -> ir.Model:
    """The main graph's nodes in topological order. onnxruntime sorts a graph itself, so files with a node
    before its inputs' producers run there (onnxruntime's own float16 converter appends the input Casts at the
    end); onnx-ir's cloning and every pass here read nodes in order. A graph already in order is left as it
    is (node order names the channel groups)."""
    if not in_topological_order(model.graph):
        model.graph.sort()
    return model


def _unique_node_names(model: ir.Model) -> ir.Model:
    """Nodes that share a name get a suffix (``Conv``, ``Conv_1``). onnx's checker allows shared names, but
    every per-node table here (MACs, groups, profiles) is keyed by name; onnxruntime refuses such a file."""
    for graph in model.graphs():
        names = [node.name for node in graph if node.name]
        if len(names) == len(set(names)):
            continue
        taken, seen = set(names), set()
        for node in graph:
            if node.name and node.name in seen:
                suffix = 1
                while f"{node.name}_{suffix}" in taken:
                    suffix += 1
                node.name = f"{node.name}_{suffix}"
                taken.add(node.name)
            seen.add(node.name)
    return model


def in_topological_order(graph: ir.Graph) -> bool:
    """Whether every node of ``graph`` comes after the producers of its inputs."""
    known = {v.name for v in graph.inputs} | set(graph.initializers) | {""}
    for node in graph:
        if any(v is not None and v.name not in known for v in node.inputs):
            return False
        known.update(v.name for v in node.outputs)
    return True


def _dynamic_dims(model: ir.Model) -> ir.Model:
    """Dims written as a number <= 0 (paddle2onnx writes dynamic dims as -1) become unnamed dynamic dims, so
    that no shape arithmetic downstream (batch limits, MACs, data checks) ever sees a negative size."""
    values = list(model.graph.inputs) + list(model.graph.outputs)
    values += [v for node in model.graph.all_nodes() for v in node.outputs]
    for value in values:
        shape = value.shape
        if shape is not None and any(isinstance(d, int) and d <= 0 for d in shape):
            value.shape = ir.Shape([ir.SymbolicDim(None) if isinstance(d, int) and d <= 0 else d for d in shape])
    return model


def to_proto(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto of the model (for onnxruntime, the checker and onnxsim)."""
    if isinstance(model, onnx.ModelProto):
        return model
    return ir.to_proto(load(model))


def save(model: ir.Model | onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write the model atomically, self-contained; its weights go to an external data file when asked, when
    they came from one (``external_data=None``), or when above 2 GB.

    The model goes to a unique temp file that is renamed over ``path`` last, so a reader sees the old
    model or the new one, never half of one. External weights go to ``<name>.data`` when the output is
    new; when a model already stands at ``path``, they go to a file of a new name (``<name>.<id>.data``)
    that only the new model references, so no moment pairs a model with the other's weights, and the old
    weights file is removed afterwards. Temp names are unique: two writers never delete each other's files.
    """
    return prepare_save(model, path, external_data=external_data).commit()


@dataclass
class PendingSave:
    """A model written beside ``path`` under a temp name, with its weights file (if any) under its final
    name: the bytes ``path`` will hold (hash them with ``staged``), put in place by ``commit`` (a rename)."""
    path: Path
    staged: Path
    data_name: str | None  # the weights file, already in place under its final name
    stale: set[str]  # the weights files of the model being replaced, removed once it is
    committed: bool = False

    @property
    def size_bytes(self) -> int:
        data = self.path.parent / self.data_name if self.data_name else None
        return self.staged.stat().st_size + (data.stat().st_size if data is not None else 0)

    def commit(self) -> Path:
        try:
            os.replace(self.staged, self.path)
            self.committed = True
            for stale in self.stale:
                (self.path.parent / stale).unlink(missing_ok=True)
        except OSError as exc:
            self.abort()
            raise OnnxkdError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        return self.path

    def abort(self) -> None:
        """Remove what was written (nothing once committed: the files are the model at ``path`` then)."""
        if self.committed:
            return
        self.staged.unlink(missing_ok=True)
        if self.data_name:
            (self.path.parent / self.data_name).unlink(missing_ok=True)


def prepare_save(model: ir.Model | onnx.ModelProto, path: str | os.PathLike, *,
                 external_data: bool | None = None) -> PendingSave:
    """``save``'s first half: everything written but the final rename (``PendingSave.commit``)."""
    path = Path(path)
    if isinstance(model, onnx.ModelProto):
        model = ir.from_proto(model)
    if not isinstance(model, ir.Model):
        raise OnnxkdError(f"save: expected an onnx_ir.Model or onnx.ModelProto, got {type(model).__name__}")
    if external_data is None:  # weights still read from another model's file are re-written beside this one
        external_data = has_external_tensors(model)
    external_data = external_data or initializer_bytes(model) > PROTOBUF_LIMIT
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():  # the rename over it failed late, as 'Device or resource busy'
        raise OnnxkdError(f"{path}: is a folder; give the model's file name (such as {path / 'model.onnx'})")
    if not folder.is_dir():
        raise OnnxkdError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxkdError(f"{path}: output folder {folder} is not writable")
    old_data = _external_files(path)
    staged = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    data_name = None
    try:
        if external_data:
            data_name = _reserve_data_name(folder, path.name)
            # onnx-ir records the data file's name in the model: the final one, reserved above
            ir.save(model, staged, external_data=data_name)
        else:
            ir.save(weights_inside(model), staged)
    except BaseException as exc:
        PendingSave(path, staged, data_name, set()).abort()
        if isinstance(exc, OSError):
            raise OnnxkdError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    return PendingSave(path, staged, data_name, old_data - {data_name})


def remove(path: str | os.PathLike) -> None:
    """Delete a model that ``save`` wrote, with its weights file(s)."""
    path = Path(path)
    for data in _external_files(path):
        (path.parent / data).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _reserve_data_name(folder: Path, name: str) -> str:
    """``<name>.data`` for a new output, else a fresh ``<name>.<id>.data``; created empty (O_EXCL) so that a
    concurrent writer cannot take the same name."""
    candidates = [] if (folder / name).exists() else [f"{name}.data"]
    candidates += [f"{name}.{uuid.uuid4().hex[:8]}.data" for _ in range(8)]
    for candidate in candidates:
        try:
            os.close(os.open(folder / candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"no free name for the weights of {name} in {folder}")


def _external_files(path: Path) -> set[str]:
    """The weights files save() wrote for the model at ``path`` (``<name>[.<id>].data``) that it references."""
    if not path.exists() or not any(path.parent.glob(f"{glob.escape(path.name)}*.data")):
        return set()  # no weights file of ours beside it: no need to parse a possibly large model
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  (an unreadable old file: nothing to clean up)
        return set()
    from onnx.external_data_helper import _get_all_tensors

    return {entry.value for tensor in _get_all_tensors(proto) for entry in tensor.external_data
            if entry.key == "location" and entry.value.startswith(path.name) and entry.value.endswith(".data")
            and "/" not in entry.value}  # only weights files named as save() names them are ever removed


def initializer_bytes(model: ir.Model) -> int:
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
    """The identity of a model: its file's SHA-256, with its weights files' where it has some (new weights under
    the same file names are another model: --resume and a recipe's teacher_sha256 must see them), or that of its
    serialised proto when in memory. A model without weights files has its file's SHA-256."""
    if not isinstance(model, (str, os.PathLike)):
        return sha256_bytes(to_proto(model).SerializeToString())
    path = Path(model)
    # a file above the graph-only size holds its weights (a weights file's model is its graph: a few MB)
    weights = _weight_files(path) if path.stat().st_size <= GRAPH_ONLY_BYTES else []
    if not weights:
        return sha256_file(path)
    digest = hashlib.sha256(sha256_file(path).encode())
    for file in weights:
        digest.update(f"{os.path.relpath(file, path.parent.absolute())}:{sha256_file(file)}".encode())
    return digest.hexdigest()


def opset_of(model: ir.Model, domain: str = "") -> int:
    """The model's opset version for a domain ('' = ai.onnx)."""
    version = model.opset_imports.get(domain)
    if version is None and domain in ("", "ai.onnx"):
        version = model.opset_imports.get("ai.onnx", model.opset_imports.get("", 1))
    return int(version or 1)
