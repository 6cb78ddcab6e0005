"""The numpy ``Dataset`` as torch batches: seeded shuffles, full-size batches, one shard per process.

Every training batch has the full ``batch_size`` (a short last batch is topped up from the start of the
epoch's order): constant shapes keep ``torch.compile`` from recompiling, and under DDP every process
gets the same number of samples, so averaging the processes' gradients gives the gradient of the whole
batch. ``batch_size`` is the global batch: each of ``world`` processes takes its ``batch_size / world``
contiguous slice, so results do not depend on the number of GPUs.

The order of epoch ``e`` depends only on ``(seed, e)``: a resumed run replays the same batches.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from onnxkd.data import Dataset
from onnxkd.distill.loader import Batch, Loader
from onnxkd.errors import OnnxkdError


class Batches:
    def __init__(self, loader: Loader, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        dataset = loader.dataset
        if batch_size % world:
            raise OnnxkdError(f"--batch-size {batch_size} is not divisible by the {world} processes")
        if len(dataset) < world:
            raise OnnxkdError(f"{len(dataset)} training samples for {world} processes")
        self.dataset, self.loader = dataset, loader
        # a data set smaller than one batch: one batch of all of it (a multiple of the processes)
        self.batch_size = min(batch_size, len(dataset) // world * world)
        self.seed, self.rank, self.world = seed, rank, world
        self.local = self.batch_size // world

    def __len__(self) -> int:
        """Steps per epoch."""
        return math.ceil(len(self.dataset) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from step ``start`` on (a resumed run skips the steps it already made)."""
        order = self.order(epoch)
        n, size = len(order), self.batch_size
        mine = slice(self.rank * self.local, (self.rank + 1) * self.local)
        return self.loader(order[np.arange(step * size, (step + 1) * size) % n][mine] for step in range(start, len(self)))


def split_holdout(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A fixed, seeded ``fraction`` of the samples held out for validation (at least one, never all)."""
    n = len(dataset)
    if n < 2:
        raise OnnxkdError(f"{dataset.source or 'data'}: {n} sample(s) cannot be split into training and "
                          "validation; give --val-data")
    held = min(max(1, round(n * fraction)), n - 1)
    order = np.random.default_rng([seed, 10_000]).permutation(n)
    return dataset.take(np.sort(order[held:])), dataset.take(np.sort(order[:held]))
