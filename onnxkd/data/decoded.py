"""Decoded images kept on disk as uint8 rows, so that an image is decoded once per run, not once per pass.

Decoding a JPEG costs a core about as much as a training step of a small model on a CPU; reading the decoded
pixels back costs almost nothing. A run reads the training images several times (the teacher-output pass,
every epoch, BatchNorm recalibration) and the validation images every epoch, so the first read of each image
decodes it and writes its pixels (after resizing, before normalising) to a file in the work folder; later
reads take them from there. Loader workers share the files: each writes the rows it decoded with ``pwrite``
at the row's own offset, then the row's flag byte, and reads a row only once its flag is set. Reads use
``pread``, never a memory map, so memory stays what is in flight. Once every row is decoded
(``decoded_in_full``), training on a CPU reads batches in its own process (distill/loader.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np


class DecodedCache:
    def __init__(self, folder: Path, rows: int, row_shape: tuple[int, ...]):
        folder.mkdir(parents=True, exist_ok=True)
        self.pixels, self.flags = str(folder / "pixels.u8"), str(folder / "decoded.flags")
        self.row_shape, self.row_bytes = tuple(row_shape), int(np.prod(row_shape))
        for path, size in ((self.pixels, rows * self.row_bytes), (self.flags, rows)):
            with open(path, "wb") as handle:
                handle.truncate(size)  # sparse: disk is used as rows are written
        self._complete = rows == 0

    def complete(self) -> bool:
        """Every row decoded (by this process or by a loader worker)."""
        if not self._complete:  # once complete, always: rows are never unset
            with open(self.flags, "rb") as handle:
                self._complete = b"\x00" not in handle.read()
        return self._complete

    def read(self, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out[k]`` for every cached ``index[k]``; returns the mask of rows that were cached."""
        found = np.zeros(len(index), dtype=bool)
        flags, pixels = os.open(self.flags, os.O_RDONLY), os.open(self.pixels, os.O_RDONLY)
        try:
            for k, i in enumerate(index.tolist()):
                if os.pread(flags, 1, i) == b"\x01":
                    found[k] = os.preadv(pixels, [out[k].reshape(-1)], i * self.row_bytes) == self.row_bytes
        finally:
            os.close(flags)
            os.close(pixels)
        return found

    def write(self, index: np.ndarray, rows: np.ndarray) -> None:
        flags, pixels = os.open(self.flags, os.O_WRONLY), os.open(self.pixels, os.O_WRONLY)
        try:
            for i, row in zip(index.tolist(), rows):
                os.pwrite(pixels, np.ascontiguousarray(row).reshape(-1), i * self.row_bytes)
                os.pwrite(flags, b"\x01", i)  # after the pixels: a set flag means a whole row
        finally:
            os.close(flags)
            os.close(pixels)


def _image_reader(array):
    """The ImageReader under ``array`` (through lazy subsets and casts), or None."""
    from onnxkd.data.images import ImageReader

    reader = getattr(array, "_read", None)
    while reader is not None and not isinstance(reader, ImageReader):
        reader = getattr(reader, "read", None)
    return reader


def image_readers(datasets) -> list:
    """The distinct image readers under the data sets' arrays (a held-out split shares its parent's)."""
    found = {id(r): r for dataset in datasets for r in map(_image_reader, dataset.arrays.values()) if r is not None}
    return list(found.values())


def decoded_in_full(dataset) -> bool:
    """``dataset`` reads images from disk, and every array it reads from disk is images whose pixels are all in
    a decoded cache: a batch is then a few ``pread`` calls and one pass to normalise."""
    from onnxkd.data.lazy import LazyArray

    lazy = [array for array in dataset.arrays.values() if isinstance(array, LazyArray)]
    readers = [_image_reader(array) for array in lazy]
    return bool(lazy) and all(r is not None and r.cache is not None and r.cache.complete() for r in readers)


def cache_decoded_images(datasets, folder: Path) -> int:
    """Give every image reader of ``datasets`` a decoded cache under ``folder``; returns the bytes it may take
    (0: no images, or too little free disk: then images are decoded at every read, as without a cache)."""
    readers = [r for r in image_readers(datasets) if r.cache is None]
    needed = sum(len(r.files) * r.height * r.width * r.channels for r in readers)
    if not needed or needed > shutil.disk_usage(folder.parent if folder.parent.exists() else ".").free // 2:
        return 0
    for number, reader in enumerate(readers):
        reader.cache = DecodedCache(folder / str(number), len(reader.files), (reader.height, reader.width,
                                                                              reader.channels))
    return needed


def drop_decoded_images(datasets, folder: Path) -> None:
    """Readers decode at every read again; the folder goes."""
    for reader in image_readers(datasets):
        reader.cache = None
    shutil.rmtree(folder, ignore_errors=True)
