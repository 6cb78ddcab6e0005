"""Arrays whose rows are read from disk when asked for: ``.npy`` files and the stored members of ``.npz`` files.

A ``LazyArray`` has ``shape``, ``dtype``, ``ndim`` and ``len``, and indexing it by an int, a slice or an array of
row indices returns a numpy array of just those rows. Subsets (``take``) and casts (``astype``) are lazy too,
so a held-out split or a dtype conversion never copies the data set: memory holds what is in flight.

Rows are read with ``os.pread`` on a file opened per read, not memory-mapped: pages of a map touched once
count in the process's resident memory until the kernel drops them, so a map of a large file looks like a
copy of it; a read is bounded by its batch. Opening per read also keeps the arrays usable after a fork.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from onnxkd.errors import OnnxkdError

Reader = Callable[[np.ndarray], np.ndarray]  # sorted-or-not row indices -> rows
CHUNK_BYTES = 16 << 20  # what a full pass over the data (value checks) reads at once (it holds about 3x)


class LazyArray:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, read: Reader, source: str = "",
                 checked: bool = False):
        self.shape, self.dtype, self._read, self.source = tuple(shape), np.dtype(dtype), read, source
        # the reader's values are known to fit (decoded pixels): no pass over every value is needed
        self.checked = checked

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            rows = range(len(self))[key]
            return self._read(np.arange(rows.start, rows.stop, rows.step))
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")  # also ends numpy's sequence protocol
        if index.ndim == 0:
            return self._read(index.reshape(1))[0]
        return self._read(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row, in memory: what ``np.asarray`` asks for (tests, small data); the pipeline reads batches."""
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def take(self, index: np.ndarray) -> LazyArray:
        """The rows ``index`` as a lazy array (nothing is read)."""
        index = np.asarray(index, dtype=np.int64)
        return LazyArray((len(index), *self.shape[1:]), self.dtype, _Rows(self._read, index), self.source,
                         self.checked)

    def astype(self, dtype, copy: bool = False) -> LazyArray:
        """Rows cast to ``dtype`` when read."""
        if np.dtype(dtype) == self.dtype:
            return self
        return LazyArray(self.shape, dtype, _Cast(self._read, np.dtype(dtype)), self.source, self.checked)

    def chunks(self) -> Iterator[np.ndarray]:
        """All rows, a bounded block at a time (for checks that must see every value)."""
        row_bytes = max(1, self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64)))
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, len(self), step):
            yield self[start:start + step]


class _Rows:
    """Reads the rows ``index[rows]`` of a parent reader (a picklable closure: loader workers get a copy)."""

    def __init__(self, read: Reader, index: np.ndarray):
        self.read, self.index = read, index

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.read(self.index[rows])


class _Cast:
    def __init__(self, read: Reader, dtype: np.dtype):
        self.read, self.dtype = read, dtype

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.read(rows).astype(self.dtype)


def chunks(array) -> Iterator[np.ndarray]:
    """``array`` in bounded blocks when lazy, else whole."""
    return array.chunks() if isinstance(array, LazyArray) else iter([array])


def subset(array, index: np.ndarray):
    """The rows ``index``: a lazy view of a lazy array, a copy of an in-memory one."""
    return array.take(index) if isinstance(array, LazyArray) else array[index]


# --------------------------------------------------------------------------- .npy data in a file


class FileRows:
    """Rows of an array stored row after row from ``offset`` in ``path``, one ``pread`` per run of consecutive
    rows."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))

    def __call__(self, index: np.ndarray) -> np.ndarray:
        path, offset, shape, dtype, row_bytes = self.path, self.offset, self.shape, self.dtype, self.row_bytes
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *shape[1:]), dtype)
        if not len(index) or not row_bytes:
            return out
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        runs = np.split(np.arange(len(index)), np.flatnonzero(np.diff(ordered) != 1) + 1)  # consecutive rows
        with open(path, "rb") as handle:
            for run in runs:
                first, count, where = int(ordered[run[0]]), len(run), order[run]
                at = offset + first * row_bytes
                if where[-1] - where[0] == count - 1 and np.all(np.diff(where) == 1):  # in order: read in place
                    target = out[where[0]:where[0] + count]
                    done = os.preadv(handle.fileno(), [target.reshape(-1).view(np.uint8)], at)
                else:
                    data = os.pread(handle.fileno(), count * row_bytes, at)
                    done = len(data)
                    if done == count * row_bytes:
                        out[where] = np.frombuffer(data, dtype).reshape(count, *shape[1:])
                if done < count * row_bytes:
                    raise OnnxkdError(f"{path}: truncated (rows {first}..{first + count - 1} are past its end)")
        return out



def _array_at(path: Path, handle, label: str) -> LazyArray | None:
    """The .npy array whose header starts at ``handle``'s position, lazily; None where rows are not laid out
    one after another on disk (Fortran order, object arrays): those are read whole."""
    version = np.lib.format.read_magic(handle)
    if version not in ((1, 0), (2, 0)):  # 3.0: utf-8 field names, rare; read whole
        return None
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if fortran and len(shape) > 1 or dtype.hasobject or not shape:
        return None
    offset = handle.tell()
    needed = offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if os.path.getsize(path) < needed:
        raise OnnxkdError(f"{label}: truncated ({os.path.getsize(path):,} bytes, the header promises {needed:,})")
    return LazyArray(shape, dtype, FileRows(path, offset, shape, dtype), label)


def open_npy(path: Path) -> LazyArray | np.ndarray:
    with open(path, "rb") as handle:
        lazy = _array_at(path, handle, str(path))
    return lazy if lazy is not None else np.load(path, allow_pickle=False)


def open_npz(path: Path) -> dict[str, LazyArray | np.ndarray]:
    """Every member of an .npz: stored (``np.savez``) ones read lazily where they lie in the zip, compressed
    ones (``np.savez_compressed``) decompressed whole, as a zip stream cannot be read at an offset."""
    arrays: dict[str, LazyArray | np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            lazy = None
            if info.compress_type == zipfile.ZIP_STORED:
                handle.seek(info.header_offset)
                header = handle.read(30)  # the local header: its name and extra lengths may differ from the index
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                handle.seek(info.header_offset + 30 + name_length + extra_length)
                lazy = _array_at(path, handle, f"{path}: array {key!r}")
            if lazy is None:
                with archive.open(info) as member:
                    lazy = np.lib.format.read_array(member, allow_pickle=False)
            arrays[key] = lazy
    return arrays
