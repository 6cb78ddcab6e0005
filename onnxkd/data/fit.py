"""Check that a data set fits a model and cast it to the input dtypes; every refusal names the input."""

from __future__ import annotations

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray, chunks
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

LABEL_LIKE = frozenset({"y", "label", "target", "targets", "classes"})  # what users call their labels


def fit_to_model(data: Dataset, specs: list[InputSpec]) -> Dataset:
    """A copy of ``data`` keyed by input name, cast to each input's dtype, with int64 labels."""
    arrays = _match_names(data, specs)
    where = f"{data.source}: " if data.source else ""
    n = None
    fitted = {}
    for spec in specs:
        array = arrays[spec.name]
        origin = data.origin.get(spec.name, spec.name)
        shown = spec.name if origin == spec.name else f"{spec.name} (array {origin})"
        fitted[spec.name] = _fit_array(array, spec, f"{where}input {shown!r}")
        if n is None:
            n = len(array)
        elif len(array) != n:
            raise OnnxkdError(f"{where}input {spec.name!r} has {len(array)} samples, other inputs have {n}")
    if not n:
        raise OnnxkdError(f"{where}input {specs[0].name!r} has no samples")
    _check_shared_dims(fitted, specs, where)
    seq_first = next((_seq_first(spec) for spec in specs if spec.batch_axis), "")
    labels = None if data.labels is None else _fit_labels(data.labels, n, where, seq_first)
    return Dataset(fitted, labels, data.source, classes=data.classes, content=data.content)


def _check_shared_dims(arrays: dict[str, np.ndarray], specs: list[InputSpec], where: str) -> None:
    """Inputs that declare the same named dim (input_ids and attention_mask of one ``seq``) must get the same
    size from the data: the model broadcasts one against the other and fails inside the first run."""
    seen: dict[str, tuple[str, int, int]] = {}  # dim name -> (input, axis, size) where first given
    for spec in specs:
        for axis, (want, got) in enumerate(zip(spec.sample_dims, arrays[spec.name].shape[1:]), start=1):
            if not isinstance(want, str) or want.strip("?-_0123456789").lower() in ("", "none", "unknown", "dynamic"):
                continue  # a marker some converters write for every unknown dim, not a name that ties two
            first = seen.setdefault(want, (spec.name, axis, got))
            if first[2] != got:
                raise OnnxkdError(f"{where}input {spec.name!r} dim {axis} is {got}, input {first[0]!r} dim {first[1]} is "
                                  f"{first[2]}: the model declares both as {want!r}, so they must be equal")


def _match_names(data: Dataset, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    arrays = dict(data.arrays)
    if len(specs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        # one array for a one-input model is its input, whatever its name (np.savez(path, x) or (path, x=x))
        [(key, array)] = arrays.items()
        data.origin[names[0]] = key
        return {names[0]: array}
    where = f"{data.source}: " if data.source else ""
    unknown = [k for k in arrays if k not in names]
    if unknown:
        hint = next((f" (labels go under the key 'labels', not {k!r})" for k in unknown if k.lower() in LABEL_LIKE), "")
        raise OnnxkdError(f"{where}unknown input name {unknown[0]!r}; the model's inputs are "
                          f"{', '.join(map(repr, names))}{hint}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise OnnxkdError(f"{where}no array for input {missing[0]!r}")
    return arrays


def _fit_array(array: np.ndarray, spec: InputSpec, label: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise OnnxkdError(f"{label}: non-numeric array of dtype {array.dtype}, model expects {spec.describe()}")
    if array.ndim != spec.rank:
        raise OnnxkdError(
            f"{label}: array of shape {list(array.shape)} has rank {array.ndim}, model expects {spec.describe()} "
            f"(samples on axis 0{_seq_first(spec)})"
        )
    # axis 0 counts samples; the model's batch dim only limits how many run at once
    for axis, (want, got) in enumerate(zip(spec.sample_dims, array.shape[1:]), start=1):
        if isinstance(want, int) and want != got:
            raise OnnxkdError(f"{label}: dim {axis} is {got}, model expects {spec.describe()}{_seq_first(spec)}"
                              + _fixed_seq_first(spec, array.shape))
    if getattr(array, "checked", False):
        return array.astype(spec.dtype)
    nonfinite, cast = 0, None
    for block in chunks(array):  # an in-memory array is one block; a lazy file is read block by block
        bad, cast = _check_values(block, spec, label)
        nonfinite += bad
    if nonfinite:
        raise OnnxkdError(f"{label}: {nonfinite} NaN/Inf values")
    if isinstance(array, LazyArray):
        return array.astype(spec.dtype)  # cast as rows are read
    return np.ascontiguousarray(cast)  # the whole array's cast, made by the check


def _seq_first(spec: InputSpec) -> str:
    if not spec.batch_axis:
        return ""
    dims = ",".join("?" if d is None else str(d) for d in ("N", *spec.sample_dims))
    return f"; its batch is axis {spec.batch_axis}, data gives samples on axis 0: [{dims}]"


def _check_values(block: np.ndarray, spec: InputSpec, label: str) -> tuple[int, np.ndarray | None]:
    """The number of NaN/Inf values in ``block`` (counted over the whole array by the caller) and, when there
    are none, ``block`` cast to the input's dtype; other values that do not fit the input are refused here."""
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        return int((~np.isfinite(block)).sum()), None
    if spec.dtype.kind in "iub" and block.dtype.kind == "f" and not np.array_equal(block, np.round(block)):
        raise OnnxkdError(f"{label}: non-integer values for a {spec.dtype} input")
    if spec.index_range and block.size:
        _check_ids(block, spec.index_range, label)
    with np.errstate(over="ignore"):
        cast = block.astype(spec.dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():  # e.g. float64 beyond float16's range
        raise OnnxkdError(f"{label}: values overflow {spec.dtype}")
    return 0, cast


def _fixed_seq_first(spec: InputSpec, shape: tuple[int, ...]) -> str:
    """Advice where the data would fit a seq-first model of fixed batch (x[T, N, C] with T and N numbers, which
    nothing tells from a batch-first one): say how to make the batch axis known."""
    dims = spec.shape
    if spec.batch_axis or len(dims) < 3 or not all(isinstance(d, int) for d in dims[:2]):
        return ""
    if tuple(shape[1:]) != (dims[0], *dims[2:]):
        return ""
    return (f" (if the model is seq-first, x[T={dims[0]}, N={dims[1]}, ...], onnxkd cannot tell its batch axis from "
            "fixed numbers: export it with a named batch dim, dynamic_axes={'" + spec.name + "': {1: 'batch'}})")


def _check_ids(block: np.ndarray, rows: int, label: str) -> None:
    low, high = block.min(), block.max()
    if high >= rows or low < -rows:
        raise OnnxkdError(f"{label}: id {int(high if high >= rows else low)} is outside the table of {rows:,} rows "
                          f"it indexes (valid ids: 0 to {rows - 1:,})")


def _fit_labels(labels: np.ndarray, n: int, where: str, seq_first: str = "") -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise OnnxkdError(f"{where}labels: expected integer class ids, got dtype {labels.dtype}")
    labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
    if labels.ndim != 1:
        raise OnnxkdError(f"{where}labels: expected a 1-D array of class ids, got shape {list(labels.shape)}")
    if len(labels) != n:
        raise OnnxkdError(f"{where}labels: {len(labels)} labels for {n} samples"
                          + (f" (a seq-first model{seq_first})" if seq_first else ""))
    if len(labels) and labels.min() < 0:
        raise OnnxkdError(f"{where}labels: negative class id {int(labels.min())}")
    return labels.astype(np.int64)
