"""Python data sources given to the API, the convention of ``nncf.Dataset(source, transform_fn)`` and
onnxruntime's ``CalibrationDataReader``: no torch import, duck typing only.

* a **map-style** source (``len`` and ``[i]``: a torch ``Dataset``) is read lazily, per batch (``map_style.py``);
* an **iterable** source (``IterableDataset``, ``DataLoader``, generator, list) is read once into ``.npy`` files
  in a temporary folder and read back per batch (``spill.py``);
* ``transform`` is applied to each item the source yields (a sample; for a ``DataLoader``, a batch) and returns a
  sample in one of the forms of ``samples.py``, whose values are checked and cast as rows are read: the arrays
  are marked ``checked``, so ``fit_to_model`` makes no pass over every sample at open time.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.map_style import MapStyle, open_map_style
from onnxkd.data.samples import Transform, to_numpy
from onnxkd.data.spill import read_iterable
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

__all__ = ["MapStyle", "Transform", "is_map_style", "open_source", "to_numpy"]


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
