"""Where a teacher's precomputed targets live: in memory when they fit ``--cache-mb``, else in files in the work
folder when reading them back is measured to cost less than running the teacher again at every step.

The files are written once, in sample order, and read a batch of rows at a time with ``pread`` (``LazyArray``'s
reader), never memory-mapped: a map's touched pages would count as the process's memory, and the point of the
disk cache is that memory does not grow with the data set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from onnxkd.data.lazy import LazyArray, FileRows

PROBE_BYTES = 32 << 20  # the file written to time the work folder's disk


class MemoryStore:
    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}

    def put(self, indices: np.ndarray, values: dict[str, torch.Tensor], samples: int) -> None:
        for name, value in values.items():
            if name not in self.values:
                self.values[name] = torch.empty((samples, *value.shape[1:]), dtype=value.dtype, device=value.device)
            self.values[name][torch.as_tensor(indices, device=value.device)] = value

    def get(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long, device=next(iter(self.values.values())).device)
        return {name: values.index_select(0, index) for name, values in self.values.items()}


class DiskStore:
    """One raw file of rows per tensor in ``folder``; rows are appended in sample order by ``put``."""

    def __init__(self, folder: Path, device: torch.device):
        self.folder, self.device = Path(folder), device
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, LazyArray] = {}
        self.written = 0

    def put(self, indices: np.ndarray, values: dict[str, torch.Tensor], samples: int) -> None:
        if not np.array_equal(indices, np.arange(self.written, self.written + len(indices))):
            raise ValueError("a disk cache is filled in sample order")
        for i, (name, value) in enumerate(values.items()):
            array = value.detach().cpu().numpy()
            path = self.folder / f"{i}.rows"
            if name not in self.rows:  # the reader of all the rows, once their shape is known
                shape = (samples, *array.shape[1:])
                self.rows[name] = LazyArray(shape, array.dtype, FileRows(path, 0, shape, array.dtype))
            with open(path, "ab") as handle:
                handle.write(np.ascontiguousarray(array).tobytes())
        self.written += len(indices)

    def get(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(rows[indices]).to(self.device) for name, rows in self.rows.items()}


def disk_seconds_per_byte(folder: Path) -> tuple[float, float]:
    """(write, read) seconds per byte of ``folder``'s disk: a file written and synced, dropped from the page cache
    (``posix_fadvise``, no privileges needed), then read back in 1 MiB pieces at random offsets, as a shuffled
    epoch reads cached rows."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "disk-probe.bin"
    block = np.random.default_rng(0).integers(0, 255, PROBE_BYTES, dtype=np.uint8).tobytes()
    try:
        started = time.perf_counter()
        with open(path, "wb") as handle:
            handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        write = (time.perf_counter() - started) / PROBE_BYTES
        piece = 1 << 20
        with open(path, "rb") as handle:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            offsets = np.random.default_rng(1).permutation(PROBE_BYTES // piece) * piece
            started = time.perf_counter()
            for offset in offsets:
                os.pread(handle.fileno(), piece, int(offset))
            read = (time.perf_counter() - started) / PROBE_BYTES
    finally:
        path.unlink(missing_ok=True)
    return write, read
