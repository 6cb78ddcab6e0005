"""A data set: one array per graph input (samples on axis 0) and optional int labels.

An array is a numpy array or a ``LazyArray`` whose rows are read from disk on demand (``.npy`` files, stored
``.npz`` members): indexing either gives numpy rows, and subsets of a lazy one stay lazy, so that splitting
or sampling a large data set copies nothing. Labels are always in memory (one int per sample)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from onnxkd.data.lazy import LazyArray, subset


@dataclass
class Dataset:
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    # names the arrays had in the file, for error messages after renaming (e.g. "arr_0" -> "input")
    origin: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None  # an image folder's class folder names, by label id
    # what --resume compares besides the file's stat: a digest of an image folder's files, labels and
    # preprocessing (data_identity)
    content: str | None = None

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def take(self, indices: np.ndarray | slice) -> "Dataset":
        if isinstance(indices, slice):
            indices = np.arange(*indices.indices(len(self)))
        labels = None if self.labels is None else self.labels[indices]
        return Dataset({k: subset(v, indices) for k, v in self.arrays.items()}, labels, self.source, self.origin,
                       self.classes, self.content)

    def batches(self, size: int, ahead: int = 2) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Consecutive batches of numpy arrays (the last one may be short). Rows read from disk (decoded images,
        file rows) are read ``ahead`` batches in advance by threads, while the caller runs the current one:
        decoding and onnxruntime both release the GIL."""
        parts = [slice(start, start + size) for start in range(0, len(self), size)]
        if not ahead or not any(isinstance(v, LazyArray) for v in self.arrays.values()):
            yield from map(self._rows, parts)
            return
        with ThreadPoolExecutor(ahead) as pool:
            pending = deque(pool.submit(self._rows, part) for part in parts[:ahead])
            for part in parts[ahead:]:
                ready = pending.popleft().result()
                pending.append(pool.submit(self._rows, part))
                yield ready
            while pending:
                yield pending.popleft().result()

    def _rows(self, part: slice) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        return {k: v[part] for k, v in self.arrays.items()}, None if self.labels is None else self.labels[part]

    def first(self, n: int) -> dict[str, np.ndarray]:
        """``n`` samples for timing; a data set smaller than ``n`` is repeated."""
        index = np.arange(n) % len(self)
        return {k: np.ascontiguousarray(v[index]) for k, v in self.arrays.items()}

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Input name -> the shape of one sample (the data's sizes for the model's dynamic dims)."""
        return {name: tuple(array.shape[1:]) for name, array in self.arrays.items()}
