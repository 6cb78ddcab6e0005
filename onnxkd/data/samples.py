"""One sample of a Python data source, in whichever form the user gives it, as numpy arrays by input name.

A sample is a dict keyed by input name (plus an optional ``labels`` or ``label`` key), a tuple or list
``(input_1, ..., input_k[, label])`` for a model of k inputs, or one array when the model has one input.
Arrays may be numpy arrays, CPU or GPU tensors (converted with ``.detach().cpu()`` then ``np.asarray``, without
importing torch), PIL images or nested lists; a label is an integer scalar (or 0-d array). Values are checked
as rows are read (``fit_block``), each refusal naming the sample.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from onnxkd.errors import OnnxkdError

LABEL_KEYS = ("labels", "label")  # dict keys that carry the label (unless the model has an input so named)
Transform = Callable[[Any], Any]


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
                              f"{listed(names)}; labels go under 'labels')")
        missing = [name for name in names if name not in item]
        if missing:
            raise OnnxkdError(f"{where}: no {missing[0]!r} key (the model's inputs are {listed(names)})")
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
                          f"({first_line(exc)})") from exc


def label_values(value: Any, n: int | None, where: str) -> np.ndarray:
    """One label (``n`` None: an integer scalar) or a batch's ``n`` labels, as int64 of shape (1,) or (n,)."""
    try:
        label = to_numpy(value)
    except Exception as exc:
        raise OnnxkdError(f"{where}: label: cannot convert a {type(value).__name__} ({first_line(exc)})") from exc
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


def listed(names: Iterable[str]) -> str:
    return ", ".join(map(repr, names))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def call_user(function: Callable[[], Any], where: str) -> Any:
    """The user's code (``source[i]``, ``transform``, the iterator) with its errors as one-line OnnxkdErrors."""
    try:
        return function()
    except OnnxkdError:
        raise
    except Exception as exc:
        raise OnnxkdError(f"{where}: {first_line(exc)}") from exc
