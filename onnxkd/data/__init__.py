"""Data sources as numpy batches (no torch): npz files, image folders, random inputs of the model's shapes.

Validation reads them directly; distillation wraps the same ``Dataset`` for torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.fit import fit_to_model
from onnxkd.data.images import LIST_SUFFIXES, ImageOptions, load_image_folder, load_image_list
from onnxkd.data.npz import load_npz
from onnxkd.data.spec import (InputSpec, check_input_shapes, concrete_shape, input_specs, parse_input_shapes,
                              reference_shapes)
from onnxkd.data.synthetic import random_inputs
from onnxkd.errors import OnnxkdError

DataLike = Union[str, os.PathLike, Dataset, Mapping[str, np.ndarray], None]

__all__ = [
    "DataLike", "as_dataset", "Dataset", "ImageOptions", "InputSpec", "check_input_shapes", "concrete_shape",
    "fit_to_model", "input_specs", "load_data", "load_image_folder", "load_image_list", "load_npz", "parse_input_shapes", "random_inputs",
    "reference_shapes",
]


def load_data(path: str | Path, specs: list[InputSpec], image_options: ImageOptions | None = None) -> Dataset:
    """Open ``--data`` (an .npz/.npy file, a folder of .npy files, an image folder or a list of images) and fit
    it to the model's inputs. Nothing is read whole: samples are read per batch."""
    path = Path(path)
    if not path.exists():
        raise OnnxkdError(f"--data {path}: no such file or folder")
    if path.is_dir() and any(path.glob("*.npy")):  # one .npy per input (+ labels.npy)
        data = load_npz(path)
    elif path.is_dir() or path.suffix.lower() in LIST_SUFFIXES:
        if len(specs) != 1:
            raise OnnxkdError(f"--data {path}: images feed one input, the model has {len(specs)}")
        load = load_image_folder if path.is_dir() else load_image_list
        data = load(path, specs[0], image_options or ImageOptions())
    else:
        data = load_npz(path)
    return fit_to_model(data, specs)


def as_dataset(data: DataLike, specs: list[InputSpec], image_options: ImageOptions | None = None) -> Dataset | None:
    """``data`` as given to the API (a path, a ``Dataset``, a dict of arrays with optional ``labels``, or None)
    fitted to the model's inputs."""
    if data is None:
        return None
    if isinstance(data, Dataset):
        return fit_to_model(data, specs)
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items() if k != "labels"}
        labels = None if data.get("labels") is None else np.asarray(data["labels"])
        return fit_to_model(Dataset(arrays, labels, "data"), specs)
    return load_data(Path(data), specs, image_options)
