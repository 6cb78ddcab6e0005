"""Python data sources given to the API, the convention of ``nncf.Dataset(source, transform_fn)`` and
onnxruntime's ``CalibrationDataReader``: no torch import, duck typing only.

* A **map-style** source (``len(source)`` and ``source[i]``: a ``torch.utils.data.Dataset``, a torchvision data
  set, any sequence-like object) is read lazily: each input becomes a ``LazyArray`` whose reader calls
  ``source[i]`` (then ``transform``) for the rows a batch asks for. Sample 0 is read once at open time for the
  shapes. Labels must be in memory: they come from a ``targets`` or ``labels`` attribute (torchvision's
  convention; a ``Subset`` uses its parent's) when its first label matches sample 0's, else from **one pass
  over every sample at open time** (every sample is decoded once). To skip that pass, give a ``targets``
  attribute or return inputs only (no label) from ``transform``.
* An **iterable** source without random access (a ``torch.utils.data.IterableDataset``, a ``DataLoader``, whose
  batches are split back into samples, a generator, a list or tuple of samples) is read once, in the order it
  yields, into one ``.npy`` file per input in a temporary folder (``tempfile``'s, so ``TMPDIR`` picks the
  disk; removed when the interpreter exits) and read back per batch from disk: memory holds one item at a
  time, not the data set.

``transform`` is applied to each item the source yields (a sample; for a ``DataLoader``, a batch) and returns
a sample in one of these forms: a dict keyed by input name (plus an optional ``labels`` or ``label`` key), a
tuple or list ``(input_1, ..., input_k[, label])`` for a model of k inputs, or one array when the model has one
input. Arrays may be numpy arrays, CPU or GPU tensors (converted with ``.detach().cpu()`` then ``np.asarray``),
PIL images or nested lists; a label is an integer scalar (or 0-d array). Readers are picklable classes, so that
loader workers get copies; they pickle the source and ``transform`` with them, so these must pickle too when
workers are spawned rather than forked (a lambda ``transform`` works with Linux's fork only).

Values are checked as rows are read (NaN/Inf, non-integers for an integer input, overflow of the input's
dtype), each refusal naming the sample, and cast to the input's dtype there: the arrays are marked
``checked`` so that ``fit_to_model`` does not make a pass over every sample at open time. For a map-style
source this means a bad value is reported when its batch is read, not when the data is opened.
"""

from __future__ import annotations

import array as _array
import atexit
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray, open_npy
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

LABEL_KEYS = ("labels", "label")  # dict keys that carry the label (unless the model has an input so named)
LABEL_ATTRIBUTES = ("targets", "labels")  # in-memory labels of a map-style data set (torchvision)
Transform = Callable[[Any], Any]


class MapStyle(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def open_source(source: Any, specs: list[InputSpec], transform: Transform | None = None) -> Dataset:
    """A Python source as a ``Dataset`` (not yet fitted: ``fit_to_model`` checks names, ranks and dims)."""
    if is_map_style(source):
        return open_map_style(source, specs, transform)
    if hasattr(source, "__iter__"):
        return read_iterable(source, specs, transform)
    raise OnnxkdError(f"data: cannot read a {type(source).__name__}; give a path, a dict of arrays, a map-style "
                      "data set (len and indexing) or an iterable of samples")


def is_map_style(source: Any) -> bool:
    if isinstance(source, (str, bytes, os.PathLike, Mapping, np.ndarray, list, tuple)):
        return False  # lists and tuples of samples are read once, like any iterable
    if any(cls.__name__ == "IterableDataset" for cls in type(source).__mro__):
        return False  # torch's IterableDataset inherits a __getitem__ that raises
    return hasattr(source, "__len__") and hasattr(source, "__getitem__")


# --------------------------------------------------------------------------- samples -> numpy


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of ``value`` (tensors through ``.detach().cpu()``, without importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu") and not isinstance(value, np.ndarray):
        value = value.cpu()
    return np.asarray(value)


def split_item(item: Any, names: list[str], where: str) -> tuple[dict[str, Any], Any]:
    """``item`` (a sample or a batch) -> (input name -> value, label or None), by its form."""
    k = len(names)
    if isinstance(item, Mapping):
        label_keys = [key for key in LABEL_KEYS if key in item and key not in names]
        if len(label_keys) > 1:
            raise OnnxkdError(f"{where}: both 'label' and 'labels' keys; give one")
        unknown = [key for key in item if key not in names and key not in label_keys]
        if unknown:
            raise OnnxkdError(f"{where}: key {unknown[0]!r} is not an input of the model (its inputs are "
                              f"{_listed(names)}; labels go under 'labels')")
        missing = [name for name in names if name not in item]
        if missing:
            raise OnnxkdError(f"{where}: no {missing[0]!r} key (the model's inputs are {_listed(names)})")
        return {name: item[name] for name in names}, item[label_keys[0]] if label_keys else None
    if isinstance(item, (tuple, list)):
        if len(item) not in (k, k + 1):
            raise OnnxkdError(f"{where}: {type(item).__name__} of {len(item)} items, the model has {k} "
                              f"input{'s' * (k != 1)} (give inputs, or inputs + label)")
        return dict(zip(names, item[:k])), item[k] if len(item) > k else None
    if k != 1:
        raise OnnxkdError(f"{where}: one array, the model has {k} inputs (give a tuple of inputs or a dict keyed "
                          "by input name)")
    return {names[0]: item}, None


def input_value(value: Any, name: str, where: str) -> np.ndarray:
    try:
        return to_numpy(value)
    except Exception as exc:  # ragged nested lists, unsupported tensor dtypes
        raise OnnxkdError(f"{where}: input {name!r}: cannot convert a {type(value).__name__} to an array "
                          f"({_first_line(exc)})") from exc


def label_values(value: Any, n: int | None, where: str) -> np.ndarray:
    """One label (``n`` None: an integer scalar) or a batch's ``n`` labels, as int64 of shape (1,) or (n,)."""
    try:
        label = to_numpy(value)
    except Exception as exc:
        raise OnnxkdError(f"{where}: label: cannot convert a {type(value).__name__} ({_first_line(exc)})") from exc
    if label.dtype.kind not in "iu":
        shown = label.item() if label.size == 1 else f"of dtype {label.dtype}"
        raise OnnxkdError(f"{where}: label {shown!r} is not an integer class id")
    if n is None and label.ndim != 0:
        raise OnnxkdError(f"{where}: label of shape {list(label.shape)}, expected one integer class id")
    if n is not None:
        label = label.reshape(-1) if label.ndim == 2 and label.shape[1:] == (1,) else label
        if label.shape != (n,):
            raise OnnxkdError(f"{where}: labels of shape {list(label.shape)} for a batch of {n} samples")
    return label.reshape(-1).astype(np.int64)


def fit_block(block: np.ndarray, dtype: np.dtype, label: Callable[[int], str]) -> np.ndarray:
    """``block`` (rows on axis 0) cast to ``dtype``, refusing what ``fit_to_model`` refuses; ``label(row)``
    names the row's sample and input in the message."""
    if block.dtype.kind not in "biuf":
        raise OnnxkdError(f"{label(0)}: non-numeric values (dtype {block.dtype})")
    if block.dtype.kind == "f":
        bad = _first_bad_row(np.isfinite(block))
        if bad is not None:
            raise OnnxkdError(f"{label(bad)}: NaN/Inf values")
        if dtype.kind in "iub":
            bad = _first_bad_row(block == np.round(block))
            if bad is not None:
                raise OnnxkdError(f"{label(bad)}: non-integer values for a {dtype} input")
    with np.errstate(over="ignore"):
        cast = block.astype(dtype, copy=False)
    if cast.dtype.kind == "f":
        bad = _first_bad_row(np.isfinite(cast))
        if bad is not None:
            raise OnnxkdError(f"{label(bad)}: values overflow {dtype}")
    return cast


def _first_bad_row(ok: np.ndarray) -> int | None:
    if ok.all():
        return None
    return int(np.flatnonzero(~ok.reshape(len(ok), -1).all(axis=1))[0])


def _listed(names: Iterable[str]) -> str:
    return ", ".join(map(repr, names))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _call(function: Callable[[], Any], where: str) -> Any:
    """The user's code (``source[i]``, ``transform``, the iterator) with its errors as one-line OnnxkdErrors."""
    try:
        return function()
    except OnnxkdError:
        raise
    except Exception as exc:
        raise OnnxkdError(f"{where}: {_first_line(exc)}") from exc


# --------------------------------------------------------------------------- map-style sources


def open_map_style(source: MapStyle, specs: list[InputSpec], transform: Transform | None = None) -> Dataset:
    names = [spec.name for spec in specs]
    n = len(source)
    if n == 0:
        raise OnnxkdError("data: no samples")
    samples = MapSamples(source, transform, specs)
    inputs, label = samples.sample(0)
    shapes = {name: inputs[name].shape for name in names}
    for spec in specs:  # sample 0's values are checked now: a wrong kind of data fails at open time
        fit_block(inputs[spec.name][None], spec.dtype, lambda row: f"data sample 0: input {spec.name!r}")
    labels = None
    if label is not None:
        labels, samples.labels_from = _attribute_labels(source, n, int(label[0]))
        if labels is None:
            labels = _label_pass(samples, n, int(label[0]))
    samples.shapes, samples.labels = shapes, labels
    shown = f"{type(source).__name__} (map-style, {n:,} samples)"
    arrays = {spec.name: LazyArray((n, *shapes[spec.name]), spec.dtype, SampleColumn(samples, spec.name), shown,
                                   checked=True) for spec in specs}
    return Dataset(arrays, labels, shown)


class MapSamples:
    """Reads samples ``source[i]`` (then ``transform``) of a map-style source as numpy rows of every input.

    The inputs of the last rows read are kept until each input has taken its own, so that a batch of a
    model with several inputs reads (decodes, transforms) each sample once, not once per input."""

    def __init__(self, source: MapStyle, transform: Transform | None, specs: list[InputSpec]):
        self.source, self.transform = source, transform
        self.names = [spec.name for spec in specs]
        self.dtypes = {spec.name: spec.dtype for spec in specs}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.labels: np.ndarray | None = None  # the labels read at open time, checked against each sample's
        self.labels_from = ""  # "" (a pass over the samples) or the attribute they came from
        self._pending: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pending"] = None
        return state

    def sample(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        where = f"data sample {i}"
        item = _call(lambda: self.source[i], where)
        if self.transform is not None:
            item = _call(lambda: self.transform(item), f"{where}: transform")
        inputs, label = split_item(item, self.names, where)
        arrays = {name: input_value(value, name, where) for name, value in inputs.items()}
        return arrays, None if label is None else label_values(label, None, where)

    def read(self, index: np.ndarray, name: str) -> np.ndarray:
        pending = self._pending
        if pending is not None and name in pending[1] and np.array_equal(pending[0], index):
            return pending[1].pop(name)  # popped: a later read of these rows reads them again, never aliases
        rows = self._read_rows(index)
        out = rows.pop(name)
        self._pending = (index.copy(), rows) if rows else None
        return out

    def _read_rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        for i in index.tolist():
            inputs, label = self.sample(i)
            self._check_label(i, label)
            for name, value in inputs.items():
                if value.shape != self.shapes[name]:
                    raise OnnxkdError(f"data sample {i}: input {name!r} has shape {list(value.shape)}, sample 0 "
                                      f"has {list(self.shapes[name])}")
                parts[name].append(value)
        rows = {}
        for name in self.names:
            block = np.stack(parts[name]) if parts[name] else np.empty((0, *self.shapes[name]), self.dtypes[name])
            rows[name] = fit_block(block, self.dtypes[name],
                                   lambda row, name=name: f"data sample {index[row]}: input {name!r}")
        return rows

    def _check_label(self, i: int, label: np.ndarray | None) -> None:
        if (label is None) != (self.labels is None):
            has = "has no label" if label is None else "has a label"
            raise OnnxkdError(f"data sample {i}: {has}, sample 0 {'has one' if label is None else 'has none'}")
        if label is not None and int(label[0]) != self.labels[i]:
            origin = f"the source's {self.labels_from}[{i}]" if self.labels_from else "the label read at open time"
            raise OnnxkdError(f"data sample {i}: label {int(label[0])}, but {origin} is {self.labels[i]} "
                              "(a transform that changes labels must return the same ones every time)")


class SampleColumn:
    """One input's rows of a ``MapSamples``: the reader of its ``LazyArray`` (picklable)."""

    def __init__(self, samples: MapSamples, name: str):
        self.samples, self.name = samples, name

    def __call__(self, index: np.ndarray) -> np.ndarray:
        return self.samples.read(np.asarray(index, dtype=np.int64), self.name)


def _attribute_labels(source: Any, n: int, first: int) -> tuple[np.ndarray | None, str]:
    """Labels the source holds in memory (``targets``/``labels``; a ``Subset``'s parent's), when they are
    integers, one per sample, and the first equals sample 0's label (else a transform changes them)."""
    for attribute in LABEL_ATTRIBUTES:
        value = getattr(source, attribute, None)
        if value is None or callable(value):
            continue
        try:
            labels = to_numpy(value)
        except Exception:
            continue
        if labels.ndim == 1 and len(labels) == n and labels.dtype.kind in "iu" and int(labels[0]) == first:
            return labels.astype(np.int64), attribute
    parent, indices = getattr(source, "dataset", None), getattr(source, "indices", None)  # torch's Subset
    if parent is not None and indices is not None:
        try:
            indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            for attribute in LABEL_ATTRIBUTES:
                value = getattr(parent, attribute, None)
                if value is None or callable(value):
                    continue
                labels = to_numpy(value)
                if labels.ndim == 1 and labels.dtype.kind in "iu" and len(indices) == n and \
                        (not n or 0 <= indices.min() and indices.max() < len(labels)) and int(labels[indices[0]]) == first:
                    return labels[indices].astype(np.int64), f"dataset.{attribute}"
        except Exception:
            pass
    return None, ""


def _label_pass(samples: MapSamples, n: int, first: int) -> np.ndarray:
    """Every sample's label, read by one pass over the samples (each is read and transformed once)."""
    labels = np.empty(n, np.int64)
    labels[0] = first
    for i in range(1, n):
        _, label = samples.sample(i)
        if label is None:
            raise OnnxkdError(f"data sample {i}: has no label, sample 0 has one")
        labels[i] = label[0]
    return labels


# --------------------------------------------------------------------------- iterable sources


def read_iterable(source: Iterable, specs: list[InputSpec], transform: Transform | None = None) -> Dataset:
    """``source`` read once into .npy files in a temporary folder, then read back per batch from disk."""
    names = [spec.name for spec in specs]
    batched = _is_batched_loader(source)
    folder = Path(tempfile.mkdtemp(prefix="onnxkd-data-"))
    atexit.register(shutil.rmtree, folder, True)
    writer = NpyWriter(folder, specs)
    try:
        iterator = _call(lambda: iter(source), "data")
        count = items = 0
        while True:
            where = f"data batch {items}" if batched else f"data sample {count}"
            try:
                item = next(iterator)
            except StopIteration:
                break
            except OnnxkdError:
                raise
            except Exception as exc:
                raise OnnxkdError(f"{where}: {_first_line(exc)}") from exc
            if transform is not None:
                item = _call(lambda: transform(item), f"{where}: transform")
            inputs, label = split_item(item, names, where)
            block = {name: input_value(value, name, where) for name, value in inputs.items()}
            if batched:
                n = _batch_size(block, where)
                labels = None if label is None else label_values(label, n, where)
                where = f"data batch {items} (samples {count}..{count + n - 1})"
            else:
                block = {name: value[None] for name, value in block.items()}
                labels = None if label is None else label_values(label, None, where)
            writer.add(block, labels, count, where)
            count += len(next(iter(block.values())))
            items += 1
        if not count:
            raise OnnxkdError("data: no samples")
        shown = f"{type(source).__name__} (iterable, {count:,} samples read once into a temporary folder)"
        return writer.finish(shown)
    except BaseException:
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _is_batched_loader(source: Any) -> bool:
    """A torch ``DataLoader`` that collates samples into batches (``batch_size=None`` yields samples)."""
    return hasattr(source, "batch_sampler") and hasattr(source, "dataset") and source.batch_sampler is not None


def _batch_size(block: dict[str, np.ndarray], where: str) -> int:
    sizes = {name: len(value) if value.ndim else None for name, value in block.items()}
    first = next(iter(sizes.values()))
    if first is None or any(size != first for size in sizes.values()):
        raise OnnxkdError(f"{where}: inputs of {', '.join(f'{k!r}: {v}' for k, v in sizes.items())} samples; a "
                          "batch gives every input the same number of samples on axis 0")
    return first


HEADER_ALIGN = 64


def npy_header(shape: tuple[int, ...], dtype: np.dtype, size: int | None = None) -> bytes:
    """A version 1.0 .npy header of ``size`` bytes (padded), or of its natural size rounded up to 64."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.lib.format.dtype_to_descr(dtype),
                                                                      tuple(int(d) for d in shape))
    natural = -(-(10 + len(text) + 1) // HEADER_ALIGN) * HEADER_ALIGN
    size = natural if size is None else size
    if size < 10 + len(text) + 1:
        raise ValueError("npy header does not fit")
    body = text + " " * (size - 10 - len(text) - 1) + "\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", size - 10) + body.encode("latin1")


class NpyWriter:
    """One ``.npy`` file per input, written row block after row block, its header (with the sample count,
    unknown until the end) reserved first and written last; labels kept as int64 (8 bytes a sample)."""

    MAX_ROWS = 10 ** 18  # the header is reserved for this many samples' digits

    def __init__(self, folder: Path, specs: list[InputSpec]):
        self.folder, self.specs = folder, specs
        self.files: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.header_size: dict[str, int] = {}
        self.labels = _array.array("q")
        self.has_labels: bool | None = None
        self.count = 0

    def add(self, block: dict[str, np.ndarray], labels: np.ndarray | None, start: int, where: str) -> None:
        n = len(next(iter(block.values())))
        if self.has_labels is None:
            self.has_labels = labels is not None
            for spec in self.specs:
                shape = block[spec.name].shape[1:]
                header = npy_header((self.MAX_ROWS, *shape), spec.dtype)
                self.shapes[spec.name], self.header_size[spec.name] = shape, len(header)
                handle = open(self.folder / f"{len(self.files)}.npy", "wb", buffering=1 << 20)
                handle.write(header)
                self.files[spec.name] = handle
        elif (labels is not None) != self.has_labels:
            has = "has no label" if labels is None else "has a label"
            raise OnnxkdError(f"{where}: {has}, sample 0 {'has one' if labels is None else 'has none'}")
        for spec in self.specs:
            value = block[spec.name]
            if value.shape[1:] != self.shapes[spec.name]:
                raise OnnxkdError(f"{where}: input {spec.name!r} has shape {list(value.shape[1:])}, sample 0 has "
                                  f"{list(self.shapes[spec.name])}")
            cast = fit_block(value, spec.dtype, lambda row: f"data sample {start + row}: input {spec.name!r}")
            self.files[spec.name].write(np.ascontiguousarray(cast).reshape(-1).view(np.uint8))
        if labels is not None:
            self.labels.frombytes(labels.astype("<i8").tobytes())
        self.count += n

    def finish(self, shown: str) -> Dataset:
        arrays = {}
        for spec in self.specs:
            handle = self.files[spec.name]
            handle.seek(0)
            handle.write(npy_header((self.count, *self.shapes[spec.name]), spec.dtype, self.header_size[spec.name]))
            handle.close()
            array = open_npy(Path(handle.name))
            if isinstance(array, LazyArray):  # values were checked as they were written
                array.checked, array.source = True, shown
            arrays[spec.name] = array
        labels = np.frombuffer(self.labels, dtype="<i8").astype(np.int64) if self.has_labels else None
        return Dataset(arrays, labels, shown)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
