"""A map-style Python source (``len(source)`` and ``source[i]``: a ``torch.utils.data.Dataset``, a torchvision
data set, any sequence-like object), read lazily: each input is a ``LazyArray`` whose reader calls
``source[i]`` (then ``transform``) for the rows a batch asks for, in loader workers during distillation.

Sample 0 is read once at open time for the shapes. Labels must be in memory: they come from a ``targets`` or
``labels`` attribute (torchvision's convention; a ``Subset`` uses its parent's) when its first label matches
sample 0's, else from **one pass over every sample at open time** (every sample is decoded once). To skip that
pass, give a ``targets`` attribute or return inputs only (no label) from ``transform``. Readers pickle the
source and ``transform`` with them, so these must pickle too when workers are spawned rather than forked (a
lambda ``transform`` works with Linux's fork only). A bad value is reported when its batch is read.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray
from onnxkd.data.samples import Transform, call_user, fit_block, input_value, label_values, split_item, to_numpy
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

LABEL_ATTRIBUTES = ("targets", "labels")  # in-memory labels of a map-style data set (torchvision)


class MapStyle(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


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
        item = call_user(lambda: self.source[i], where)
        if self.transform is not None:
            item = call_user(lambda: self.transform(item), f"{where}: transform")
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
