"""Batches of a ``Dataset`` as torch tensors on the device, read in loader worker processes when asked.

The order is decided here, in the training process (``Batches`` draws it from ``(seed, epoch)``); workers only
read the rows they are handed, so a run reads the same batches, in the same order, with 0 or 8 workers, and a
resumed run starts at the exact step it stopped at. Training's workers are kept between epochs
(``persistent_workers``) and each reads ``PREFETCH`` batches ahead; on CUDA, batches land in pinned memory and are
copied without blocking.

A user's data error in a worker (a corrupt image, a truncated file) comes back as a value, not an exception:
torch re-raises worker exceptions with the worker's traceback in the message, and the user gets one line.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from onnxkd.data import Dataset
from onnxkd.data.decoded import decoded_in_full
from onnxkd.data.lazy import LazyArray
from onnxkd.errors import OnnxkdError

MAX_WORKERS = 8
PREFETCH = 2  # batches each worker reads ahead


@dataclass
class Batch:
    indices: np.ndarray  # sample indices in the dataset (this process's share)
    inputs: list[torch.Tensor]  # in graph-input order
    labels: torch.Tensor | None


@dataclass
class _Failed:
    message: str


def default_workers(dataset: Dataset) -> int:
    """Workers when ``--workers`` is not given: min(8, CPUs - 1) for data read from disk (decoding, reading),
    none for arrays already in memory, where a batch is one copy and a worker would only add a second."""
    if not any(isinstance(array, LazyArray) for array in dataset.arrays.values()):
        return 0
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))


class _Rows(torch.utils.data.Dataset):
    """Index array -> (indices, inputs, labels) as CPU tensors; what a worker runs."""

    def __init__(self, dataset: Dataset, input_names: list[str]):
        self.arrays = [dataset.arrays[name] for name in input_names]
        self.labels = dataset.labels

    def __getitem__(self, indices: np.ndarray):
        try:
            inputs = [torch.from_numpy(np.ascontiguousarray(array[indices])) for array in self.arrays]
        except OnnxkdError as exc:
            return _Failed(str(exc))
        labels = None if self.labels is None else torch.from_numpy(self.labels[indices])
        return torch.from_numpy(indices), inputs, labels


class _Plan:
    """The index batches of the next pass: set before each pass, so that persistent workers can be reused."""

    def __init__(self):
        self.batches: Iterable[np.ndarray] = ()

    def __iter__(self):
        return iter(self.batches)


class Loader:
    def __init__(self, dataset: Dataset, input_names: list[str], device: torch.device, workers: int = 0,
                 persistent: bool = True):
        self.dataset, self.device, self.workers, self.persistent = dataset, device, workers, persistent
        self.rows = _Rows(dataset, input_names)
        self.plan = _Plan()
        self._loader: DataLoader | None = None
        self._decoded = False  # every image decoded: read in this process from now on (CPU)

    def __call__(self, index_batches: Iterable[np.ndarray]) -> Iterator[Batch]:
        """The batches of these sample indices, in this order."""
        if self._in_process():
            items = (self.rows[np.asarray(indices)] for indices in index_batches)
        else:
            self.plan.batches = [np.asarray(indices) for indices in index_batches]
            items = iter(self._workers())
        pinned = bool(self.workers) and self.device.type == "cuda"  # pinned batches copy without blocking
        for item in items:
            if isinstance(item, _Failed):
                raise OnnxkdError(item.message)
            indices, inputs, labels = item
            yield Batch(indices.numpy(), [t.to(self.device, non_blocking=pinned) for t in inputs],
                        None if labels is None else labels.to(self.device, non_blocking=pinned))

    def in_order(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """This process's contiguous share of the data set, in order, in batches (evaluation, caches)."""
        share = np.array_split(np.arange(len(self.dataset)), world)[rank]
        return self(share[start:start + batch_size] for start in range(0, len(share), batch_size))

    def _in_process(self) -> bool:
        """Read in this process: without workers, and on CPU once every image is decoded (decoded.py). Reading
        decoded pixels costs microseconds a sample; a worker would take a core from training to ship them, and
        the two of them preempting training's threads cost more than the reading (a small student on 2 cores:
        0.65x of the in-process speed with 2 workers). On a GPU the workers still read ahead of the device."""
        if self.workers == 0:
            return True
        if self.device.type != "cpu":
            return False
        if not self._decoded and decoded_in_full(self.dataset):
            self._decoded, self._loader = True, None  # the persistent workers exit with their loader
        return self._decoded

    def _workers(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(self.rows, batch_size=None, sampler=self.plan, num_workers=self.workers,
                                      pin_memory=self.device.type == "cuda", persistent_workers=self.persistent,
                                      prefetch_factor=PREFETCH, worker_init_fn=_ignore_interrupts)
        return self._loader


def _ignore_interrupts(_worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: a worker that died of it made the run end in an internal error
    ("DataLoader worker exited unexpectedly") instead of the main process's interrupt, which saves a
    checkpoint and exits 130. The main process stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def in_order(dataset: Dataset, input_names: list[str], batch_size: int, device: torch.device,
             rank: int = 0, world: int = 1) -> Iterator[Batch]:
    """``dataset`` in order, read in this process (a probe batch, importance scores)."""
    return Loader(dataset, input_names, device).in_order(batch_size, rank, world)
