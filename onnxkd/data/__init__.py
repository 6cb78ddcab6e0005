"""Data sources as numpy batches (no torch): npz files, image folders, random inputs of the model's shapes.

Validation reads them directly; distillation wraps the same ``Dataset`` for torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.fit import fit_to_model
from onnxkd.data.hf import Columns, is_hf_object, is_hf_path, load_hf, open_hf_object
from onnxkd.data.images import LIST_SUFFIXES, ImageOptions, align_classes, load_image_folder, load_image_list
from onnxkd.data.npz import load_npz
from onnxkd.data.sources import MapStyle, Transform, open_source, to_numpy
from onnxkd.data.spec import (InputSpec, check_input_shapes, concrete_shape, input_specs, parse_input_shapes,
                              reference_shapes)
from onnxkd.data.synthetic import random_inputs
from onnxkd.errors import OnnxkdError

# a path, a Dataset, a dict of arrays (+ "labels"), one array (one-input models), a map-style data set (torch
# Dataset), an iterable of samples (IterableDataset, DataLoader, generator, list), a datasets.Dataset, or None
DataLike = Union[str, os.PathLike, Dataset, Mapping[str, Any], np.ndarray, MapStyle, Iterable[Any], None]

__all__ = [
    "DataLike", "as_dataset", "Dataset", "ImageOptions", "InputSpec", "check_input_shapes", "concrete_shape",
    "fit_to_model", "input_specs", "load_data", "load_hf", "load_image_folder", "load_image_list", "load_npz",
    "open_source", "parse_input_shapes", "random_inputs", "reference_shapes", "same_data", "SAME_DATA_WARNING",
    "data_identity", "align_classes",
]

SAME_DATA_WARNING = ("--val-data is the --data file: the student is measured on samples it was trained on, so its "
                     "figures are not held-out figures (leave --val-data out to hold out 10%)")


def data_identity(dataset: Dataset | None) -> dict | None:
    """What ``--resume`` compares to know the data is the data of the interrupted run: the file or folder it was
    read from whatever path reached it (resolved), its sample count, and for a file its size and modification time
    (a file rewritten under the same name with as many samples is other data)."""
    if dataset is None:
        return None
    identity = {"source": dataset.source, "n": len(dataset)}
    # in-memory data is named "data" (or "random inputs"), which is no file even where a folder of that name is
    path = Path(dataset.source) if dataset.source not in ("", "data", "random inputs") else None
    if path is not None and path.exists():
        stat = path.stat()
        identity.update(source=str(path.resolve()), mtime_ns=stat.st_mtime_ns,
                        bytes=stat.st_size if path.is_file() else None)
        if path.is_dir() and dataset.content is None:  # .npy files rewritten in place leave the folder's mtime
            identity["files"] = _files_in(path)
    if dataset.content is not None:
        identity["content"] = dataset.content
    return identity


def _files_in(folder: Path) -> list:
    """(name, size, mtime) of the files directly in a folder of arrays (a few .npy or arrow files)."""
    return sorted([entry.name, (stat := entry.stat()).st_size, stat.st_mtime_ns]
                  for entry in os.scandir(folder) if entry.is_file())


def same_data(data: DataLike, val_data: DataLike) -> bool:
    """Whether the validation data is the training data itself (the same file, or the same object twice)."""
    if data is None or val_data is None:
        return False
    if isinstance(data, (str, os.PathLike)) and isinstance(val_data, (str, os.PathLike)):
        try:
            return os.path.samefile(data, val_data)
        except OSError:  # a path that does not exist: reading it says so
            return False
    return data is val_data


def load_data(path: str | Path, specs: list[InputSpec], image_options: ImageOptions | None = None,
              columns: Columns = None) -> Dataset:
    """Open ``--data`` (an .npz/.npy file, a folder of .npy files, an image folder or a list of images, a
    Hugging Face ``save_to_disk`` folder or a .parquet file) and fit it to the model's inputs. Nothing is read
    whole: samples are read per batch. ``columns`` maps a Hugging Face data set's columns to inputs and labels
    (``"input_ids,attention_mask,labels=label"``, see ``onnxkd.data.hf``)."""
    path = Path(path)
    if not path.exists():
        raise OnnxkdError(f"{path}: no such file or folder")  # (--data or --val-data: the path says which)
    if is_hf_path(path):  # before the .npy-folder and image-folder checks: a save_to_disk folder is a folder
        return fit_to_model(load_hf(path, specs, columns), specs)
    if columns is not None:
        raise OnnxkdError(f"{path}: columns apply to Hugging Face data sets (a save_to_disk folder, a "
                          ".parquet file or a datasets.Dataset)")
    if path.is_dir() and any(path.glob("*.npy")):  # one .npy per input (+ labels.npy)
        data = load_npz(path)
    elif path.is_dir() or path.suffix.lower() in LIST_SUFFIXES:
        if len(specs) != 1:
            raise OnnxkdError(f"{path}: images feed one input, the model has {len(specs)}")
        load = load_image_folder if path.is_dir() else load_image_list
        data = load(path, specs[0], image_options or ImageOptions())
    else:
        data = load_npz(path)
    return fit_to_model(data, specs)


def as_dataset(data: DataLike, specs: list[InputSpec], image_options: ImageOptions | None = None,
               transform: Transform | None = None, columns: Columns = None) -> Dataset | None:
    """``data`` as given to the API, fitted to the model's inputs (None stays None):

    * a path (see ``load_data``), a ``Dataset``, a dict of arrays with optional ``labels``, or one array
      (samples on axis 0) for a one-input model;
    * a map-style data set (``len`` and ``[i]``: a ``torch.utils.data.Dataset``), read lazily per batch;
    * an iterable of samples (an ``IterableDataset``, a ``DataLoader``, a generator, a list), read once into a
      temporary folder; see ``onnxkd.data.sources`` for the sample forms and the cost of each;
    * a ``datasets.Dataset`` (Hugging Face), its ``columns`` mapped to inputs as in ``load_data``.

    A tuple ``(x, labels)`` of a one-input model's samples (samples on axis 0) and their int class ids is read as
    inputs and labels, not as two samples: ``x`` has the input's rank, batch included, which a sample has not.

    ``transform`` (nncf's ``transform_fn``) maps each item of a Python source (a sample; a ``DataLoader``'s
    batch) to a sample: a dict keyed by input name (+ ``labels``), a tuple ``(inputs..., [label])`` or one
    array."""
    if data is None:
        return None
    if transform is not None and not callable(transform):
        raise OnnxkdError(f"transform: expected a function sample -> sample, got a {type(transform).__name__}")

    def only_for_sources(what: str) -> None:
        if transform is not None:
            raise OnnxkdError(f"transform: applies to Python data sources (a map-style data set, an iterable of "
                              f"samples), not to {what}")

    if is_hf_object(data):
        return fit_to_model(open_hf_object(data, specs, transform, columns), specs)
    if isinstance(data, (str, os.PathLike)):
        only_for_sources("a path")
        return load_data(Path(data), specs, image_options, columns)
    if columns is not None:
        raise OnnxkdError(f"columns: apply to Hugging Face data sets (a datasets.Dataset, a save_to_disk folder or "
                          f"a .parquet file), not to a {type(data).__name__}")
    if isinstance(data, Dataset):
        only_for_sources("a Dataset")
        return fit_to_model(data, specs)
    if isinstance(data, Mapping):
        only_for_sources("a dict of arrays")
        arrays = {k: np.asarray(v) for k, v in data.items() if k != "labels"}
        labels = None if data.get("labels") is None else np.asarray(data["labels"])
        return fit_to_model(Dataset(arrays, labels, "data"), specs)
    if _inputs_and_labels(data, specs):  # (x, y), as scikit-learn and Keras take them
        only_for_sources("arrays")
        arrays, labels = to_numpy(data[0]), _class_ids(np.asarray(to_numpy(data[1])))
        return fit_to_model(Dataset({specs[0].name: arrays}, labels, "data"), specs)
    if _is_tensor(data):  # one tensor: like one array
        data = to_numpy(data)
    if isinstance(data, np.ndarray):
        only_for_sources("an array")
        if len(specs) != 1:
            raise OnnxkdError(f"data: one array, the model has {len(specs)} inputs; give a dict of arrays keyed by "
                              "input name")
        return fit_to_model(Dataset({specs[0].name: data}, None, "data"), specs)
    return fit_to_model(open_source(data, specs, transform), specs)


def _is_tensor(value: Any) -> bool:
    """A torch tensor, by duck typing (``import torch`` stays out of the data layer)."""
    return hasattr(value, "detach") and hasattr(value, "shape")


def _inputs_and_labels(data: Any, specs: list[InputSpec]) -> bool:
    """Whether ``data`` is ``(x, labels)`` for a one-input model: two arrays (or tensors), x of the input's rank
    (a batch: one sample has one axis less) and the labels ints, ``[N]`` or ``[N, 1]`` (their count is checked
    with the other label checks, which name a wrong one)."""
    if not (isinstance(data, tuple) and len(data) == 2 and len(specs) == 1):
        return False
    x, labels = data
    if isinstance(labels, list):
        labels = np.asarray(labels)
    if not all(isinstance(part, np.ndarray) or _is_tensor(part) for part in (x, labels)):
        return False
    column = len(labels.shape) == 2 and labels.shape[1] == 1
    if not (len(x.shape) == specs[0].rank and (len(labels.shape) == 1 or column)):
        return False
    kind = to_numpy(labels[:0]).dtype
    # float labels (pandas and scikit-learn often give float64) only where they count the samples: a float
    # second sample of a one-input model has the input's rank, never one axis
    return np.issubdtype(kind, np.integer) or (np.issubdtype(kind, np.floating) and len(labels) == len(x))


def _class_ids(labels: np.ndarray) -> np.ndarray:
    """Labels as int64 class ids: float labels holding whole numbers are converted, others refused."""
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
        raise OnnxkdError("labels: float values that are not class ids (such as 0.5 or NaN); give integer class "
                          "ids, one per sample")
    return labels.astype(np.int64)
