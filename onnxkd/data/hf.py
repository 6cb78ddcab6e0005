"""Hugging Face ``datasets``: a ``datasets.Dataset`` object, a folder written by ``Dataset.save_to_disk`` or a
``.parquet`` file, read per batch from the memory-mapped arrow files (the ``datasets`` package is imported only
here, when such data is given; ``pip install datasets``).

Columns feed inputs by name: without ``columns``, each input reads the column of its own name (a one-input
model also takes the only column that is not a label) and ``labels`` come from a ``label`` or ``labels``
column. ``columns="input_ids,attention_mask,labels=label"`` says it explicitly: ``NAME=COLUMN`` feeds input
``NAME`` (or the labels, ``labels=COLUMN``) from ``COLUMN``, a bare ``NAME`` reads its own column; inputs it
leaves out still read their own column, and labels are read only when named. A ``.parquet`` file is converted
once into ``datasets``' cache (``HF_DATASETS_CACHE``), as ``datasets`` does.

Rows are read through a picklable reader per input (a ``datasets.Dataset`` pickles as a reference to its
arrow files), cast to the input's dtype and checked as they are read, each refusal naming the row. Plain
numeric columns are also checked whole at open time (``fit_to_model``'s pass: reading arrow is cheap); columns
that decode (images, audio) are not, as that pass would decode every row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray
from onnxkd.data.samples import Transform, first_line, fit_block
from onnxkd.data.sources import open_source
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

Columns = Union[str, Mapping[str, str], Iterable[str], None]
LABEL_NAMES = ("labels", "label")
PARQUET_SUFFIXES = (".parquet",)


def is_hf_folder(path: Path) -> bool:
    """A folder written by ``save_to_disk``: a ``Dataset`` (``state.json``) or a ``DatasetDict``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def is_hf_path(path: Path) -> bool:
    return is_hf_folder(path) or (path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES)


def is_hf_object(data: Any) -> bool:
    """A ``datasets`` object (checked by its class's module: nothing is imported)."""
    return type(data).__module__.split(".")[0] == "datasets"


def class_names(data: Any) -> set[str]:
    return {cls.__name__ for cls in type(data).__mro__}


def require_datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise OnnxkdError(f"{what}: reading Hugging Face datasets needs the datasets package: pip install datasets "
                          "(or pip install 'onnxkd[hf]')") from None
    datasets.disable_progress_bars()  # its tqdm bars would interleave with ours; onnxkd shows its own progress
    return datasets


def load_hf(path: str | Path, specs: list[InputSpec], columns: Columns = None) -> Dataset:
    """A ``save_to_disk`` folder or a ``.parquet`` file as a lazy ``Dataset`` (not yet fitted)."""
    path = Path(path)
    listing = path / "dataset_dict.json"
    if path.is_dir() and listing.is_file():
        try:
            splits = list(json.loads(listing.read_text()).get("splits") or [])
        except (OSError, ValueError, AttributeError):
            splits = []
        splits = splits or sorted(sub.name for sub in path.iterdir() if sub.is_dir())
        raise OnnxkdError(f"{path}: a DatasetDict with splits {', '.join(map(repr, splits))}; give one split's "
                          f"folder, e.g. {path / (splits[0] if splits else 'train')}")
    datasets = require_datasets(str(path))
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.Dataset.from_parquet(str(path))
    except Exception as exc:
        raise OnnxkdError(f"{path}: cannot read as a Hugging Face dataset ({first_line(exc)})") from exc
    if "Dataset" not in class_names(ds):
        raise OnnxkdError(f"{path}: read as a {type(ds).__name__}, expected one datasets.Dataset")
    return from_hf(ds, specs, columns, str(path))


def open_hf_object(data: Any, specs: list[InputSpec], transform: Transform | None, columns: Columns) -> Dataset:
    """A ``datasets`` object given to the API as a lazy ``Dataset`` (not yet fitted): a ``Dataset`` through its
    columns; one with a transform of its own (``ds.with_transform(fn)``) or of ours, or an ``IterableDataset``,
    as a Python source of the rows the transform makes."""
    refuse_dataset_dict(data)
    names = class_names(data)
    custom = (getattr(data, "format", None) or {}).get("type") == "custom"
    if "Dataset" in names and "IterableDataset" not in names and transform is None and not custom:
        return from_hf(data, specs, columns)
    if columns is not None:  # an IterableDataset, or rows handed to a transform as they are
        raise OnnxkdError("columns: give columns or a transform, not both (the transform gets each row as a "
                          "dict of every column)" if transform is not None or custom else
                          f"columns: apply to a datasets.Dataset, not a {type(data).__name__} (rename its "
                          "columns to the input names, or give a transform)")
    return open_source(data, specs, transform)


def refuse_dataset_dict(data: Any) -> None:
    names = class_names(data)
    if "DatasetDict" in names or "IterableDatasetDict" in names:
        splits = ", ".join(map(repr, data))
        first = next(iter(data), "train")
        raise OnnxkdError(f"data: a {type(data).__name__} with splits {splits}; give one split, e.g. "
                          f"data[{first!r}]")


def from_hf(ds: Any, specs: list[InputSpec], columns: Columns = None, source: str | None = None) -> Dataset:
    """A ``datasets.Dataset`` as a lazy ``Dataset`` (not yet fitted): one reader per input column."""
    source = source or f"datasets.Dataset ({len(ds):,} rows)"
    if len(ds) == 0:
        raise OnnxkdError(f"{source}: no rows")
    chosen, label_column = choose_columns(list(ds.column_names), specs, columns, source)
    arrays = {}
    for spec in specs:
        reader = ColumnRows(ds, chosen[spec.name], spec, source)
        first = reader(np.zeros(1, np.int64))  # row 0 gives the shape; ragged rows are refused when read
        reader.shape = first.shape[1:]
        arrays[spec.name] = LazyArray((len(ds), *reader.shape), spec.dtype, reader,
                                      f"{source}: column {chosen[spec.name]!r}", checked=not reader.plain)
    labels = None
    if label_column is not None:
        labels = np.asarray(ds.select_columns([label_column]).with_format("numpy")[:][label_column])
    return Dataset(arrays, labels, source)


def parse_columns(columns: Columns) -> dict[str, str]:
    """``"a,b=c"`` (or ``{"b": "c"}``, or ``["a", "b=c"]``) -> ``{"a": "a", "b": "c"}``."""
    if isinstance(columns, Mapping):
        return {str(target): str(column) for target, column in columns.items()}
    parts = columns.split(",") if isinstance(columns, str) else list(columns)
    parsed: dict[str, str] = {}
    for part in parts:
        if not isinstance(part, str):
            raise OnnxkdError(f"columns {columns!r}: expected NAME or NAME=COLUMN items")
        target, sep, column = (s.strip() for s in part.partition("="))
        if not target and not sep:
            continue
        column = column if sep else target
        if not target or not column:
            raise OnnxkdError(f"columns {columns!r}: expected NAME or NAME=COLUMN items separated by commas")
        if target in parsed:
            raise OnnxkdError(f"columns {columns!r}: {target!r} is given twice")
        parsed[target] = column
    return parsed


def choose_columns(available: list[str], specs: list[InputSpec], columns: Columns,
                   source: str) -> tuple[dict[str, str], str | None]:
    """(input name -> column, label column or None) by the rules of the module's docstring."""
    names = [spec.name for spec in specs]
    label_names = [name for name in LABEL_NAMES if name not in names]
    listed = ", ".join(map(repr, available))
    chosen: dict[str, str] = {}
    label_column = None
    if columns is not None:
        for target, column in parse_columns(columns).items():
            if column not in available:
                raise OnnxkdError(f"{source}: no column {column!r} (its columns are {listed})")
            if target in names:
                chosen[target] = column
            elif target in label_names:
                label_column = column
            else:
                raise OnnxkdError(f"columns: {target!r} is neither an input of the model "
                                  f"({', '.join(map(repr, names))}) nor labels")
    for name in names:
        if name not in chosen and name in available:
            chosen[name] = name
    missing = [name for name in names if name not in chosen]
    if missing and len(names) == 1 and columns is None:
        others = [column for column in available if column not in label_names]
        if len(others) == 1:
            chosen[names[0]], missing = others[0], []
    if missing:
        raise OnnxkdError(f"{source}: no column for input {missing[0]!r} (its columns are {listed}); map one with "
                          f"columns='{missing[0]}=COLUMN'")
    if columns is None:
        label_column = next((name for name in label_names if name in available), None)
    return chosen, label_column


def _leaf_dtype(feature: Any) -> np.dtype | None:
    """The numeric dtype a feature stores (through lists and sequences), None where it decodes (images)."""
    for _ in range(32):
        dtype = getattr(feature, "dtype", None)
        if isinstance(dtype, str) and dtype not in ("list", "dict"):
            try:
                found = np.dtype(dtype)
            except TypeError:
                return None
            return found if found.kind in "biuf" else None
        feature = getattr(feature, "feature", None)
        if feature is None:
            return None
    return None


class ColumnRows:
    """One column's rows ``index`` as an array of the input's dtype (picklable: loader workers get copies)."""

    def __init__(self, ds: Any, column: str, spec: InputSpec, source: str):
        leaf = _leaf_dtype(ds.features[column])
        # numpy formatting makes floats float32 unless told the column's own dtype
        self.ds = ds.select_columns([column]).with_format("numpy", **({"dtype": leaf} if leaf is not None else {}))
        self.plain = leaf is not None  # stored numbers, not decoded media
        self.column, self.name, self.dtype, self.source = column, spec.name, spec.dtype, source
        self.shape: tuple[int, ...] | None = None

    def __call__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if not len(index):
            return np.empty((0, *(self.shape or ())), self.dtype)
        try:
            values = self.ds[index.tolist()][self.column]
        except Exception as exc:
            raise OnnxkdError(f"{self.source}: column {self.column!r}: cannot read rows ({first_line(exc)})") from exc
        block = self._stack(values, index)
        return fit_block(block, self.dtype, lambda row: f"{self.source}: row {index[row]}: input {self.name!r}"
                                                        f"{'' if self.column == self.name else f' (column {self.column!r})'}")

    def _stack(self, values: Any, index: np.ndarray) -> np.ndarray:
        if isinstance(values, np.ndarray) and values.dtype != object:
            block = values
            if self.shape is None or block.shape[1:] == self.shape:
                return block
            rows = list(block)
        else:
            rows = [np.asarray(value) for value in values]
        want = self.shape if self.shape is not None else rows[0].shape
        for row, value in zip(index.tolist(), rows):
            if value.shape != want:
                raise OnnxkdError(f"{self.source}: row {row}: column {self.column!r} has shape {list(value.shape)}, "
                                  f"row 0 has {list(want)} (pad sequences to one length)")
        return np.stack(rows)
