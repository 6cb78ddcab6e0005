"""An iterable Python source without random access (a ``torch.utils.data.IterableDataset``, a ``DataLoader``,
whose batches are split back into samples, a generator, a list or tuple of samples), read once, in the order it
yields, into one ``.npy`` file per input in a temporary folder (``tempfile``'s, so ``TMPDIR`` picks the disk;
removed when the interpreter exits), then read back per batch from disk like any ``.npy`` file: the epochs
shuffle it, and memory holds one item at a time, not the data set.
"""

from __future__ import annotations

import array as _array
import atexit
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray, open_npy
from onnxkd.data.samples import (Transform, call_user, first_line, fit_block, input_value, label_values,
                                 split_item)
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError


def read_iterable(source: Iterable, specs: list[InputSpec], transform: Transform | None = None) -> Dataset:
    """``source`` read once into .npy files in a temporary folder, then read back per batch from disk."""
    names = [spec.name for spec in specs]
    batched = _is_batched_loader(source)
    folder = Path(tempfile.mkdtemp(prefix="onnxkd-data-"))
    atexit.register(shutil.rmtree, folder, True)
    writer = NpyWriter(folder, specs)
    try:
        iterator = call_user(lambda: iter(source), "data")
        count = items = 0
        while True:
            where = f"data batch {items}" if batched else f"data sample {count}"
            try:
                item = next(iterator)
            except StopIteration:
                break
            except OnnxkdError:
                raise
            except Exception as exc:
                raise OnnxkdError(f"{where}: {first_line(exc)}") from exc
            if transform is not None:
                item = call_user(lambda: transform(item), f"{where}: transform")
            inputs, label = split_item(item, names, where)
            block = {name: input_value(value, name, where) for name, value in inputs.items()}
            if batched:
                n = _batch_size(block, where)
                labels = None if label is None else label_values(label, n, where)
                where = f"data batch {items} (samples {count}..{count + n - 1})"
            else:
                block = {name: value[None] for name, value in block.items()}
                labels = None if label is None else label_values(label, None, where)
            writer.add(block, labels, count, where)
            count += len(next(iter(block.values())))
            items += 1
        if not count:
            raise OnnxkdError("data: no samples")
        shown = f"{type(source).__name__} (iterable, {count:,} samples read once into a temporary folder)"
        return writer.finish(shown)
    except BaseException:
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _is_batched_loader(source: Any) -> bool:
    """A torch ``DataLoader`` that collates samples into batches (``batch_size=None`` yields samples)."""
    return hasattr(source, "batch_sampler") and hasattr(source, "dataset") and source.batch_sampler is not None


def _batch_size(block: dict[str, np.ndarray], where: str) -> int:
    sizes = {name: len(value) if value.ndim else None for name, value in block.items()}
    first = next(iter(sizes.values()))
    if first is None or any(size != first for size in sizes.values()):
        raise OnnxkdError(f"{where}: inputs of {', '.join(f'{k!r}: {v}' for k, v in sizes.items())} samples; a "
                          "batch gives every input the same number of samples on axis 0")
    return first


HEADER_ALIGN = 64


def npy_header(shape: tuple[int, ...], dtype: np.dtype, size: int | None = None) -> bytes:
    """A version 1.0 .npy header of ``size`` bytes (padded), or of its natural size rounded up to 64."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.lib.format.dtype_to_descr(dtype),
                                                                      tuple(int(d) for d in shape))
    natural = -(-(10 + len(text) + 1) // HEADER_ALIGN) * HEADER_ALIGN
    size = natural if size is None else size
    if size < 10 + len(text) + 1:
        raise ValueError("npy header does not fit")
    body = text + " " * (size - 10 - len(text) - 1) + "\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", size - 10) + body.encode("latin1")


class NpyWriter:
    """One ``.npy`` file per input, written row block after row block, its header (with the sample count,
    unknown until the end) reserved first and written last; labels kept as int64 (8 bytes a sample)."""

    MAX_ROWS = 10 ** 18  # the header is reserved for this many samples' digits

    def __init__(self, folder: Path, specs: list[InputSpec]):
        self.folder, self.specs = folder, specs
        self.files: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.header_size: dict[str, int] = {}
        self.labels = _array.array("q")
        self.has_labels: bool | None = None
        self.count = 0

    def add(self, block: dict[str, np.ndarray], labels: np.ndarray | None, start: int, where: str) -> None:
        n = len(next(iter(block.values())))
        if self.has_labels is None:
            self.has_labels = labels is not None
            for spec in self.specs:
                shape = block[spec.name].shape[1:]
                header = npy_header((self.MAX_ROWS, *shape), spec.dtype)
                self.shapes[spec.name], self.header_size[spec.name] = shape, len(header)
                handle = open(self.folder / f"{len(self.files)}.npy", "wb", buffering=1 << 20)
                handle.write(header)
                self.files[spec.name] = handle
        elif (labels is not None) != self.has_labels:
            has = "has no label" if labels is None else "has a label"
            raise OnnxkdError(f"{where}: {has}, sample 0 {'has one' if labels is None else 'has none'}")
        for spec in self.specs:
            value = block[spec.name]
            if value.shape[1:] != self.shapes[spec.name]:
                raise OnnxkdError(f"{where}: input {spec.name!r} has shape {list(value.shape[1:])}, sample 0 has "
                                  f"{list(self.shapes[spec.name])}")
            cast = fit_block(value, spec.dtype, lambda row: f"data sample {start + row}: input {spec.name!r}")
            self.files[spec.name].write(np.ascontiguousarray(cast).reshape(-1).view(np.uint8))
        if labels is not None:
            self.labels.frombytes(labels.astype("<i8").tobytes())
        self.count += n

    def finish(self, shown: str) -> Dataset:
        arrays = {}
        for spec in self.specs:
            handle = self.files[spec.name]
            handle.seek(0)
            handle.write(npy_header((self.count, *self.shapes[spec.name]), spec.dtype, self.header_size[spec.name]))
            handle.close()
            array = open_npy(Path(handle.name))
            if isinstance(array, LazyArray):  # values were checked as they were written
                array.checked, array.source = True, shown
            arrays[spec.name] = array
        labels = np.frombuffer(self.labels, dtype="<i8").astype(np.int64) if self.has_labels else None
        return Dataset(arrays, labels, shown)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
