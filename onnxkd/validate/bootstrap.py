"""Percentile bootstrap intervals that stay small in memory for 50k-sample validation sets."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

RESAMPLES = 2000
CHUNK_ELEMENTS = 2_000_000  # index matrix elements per chunk: 16 MB of int64


def index_chunks(n: int, rng: np.random.Generator, resamples: int = RESAMPLES) -> Iterator[np.ndarray]:
    """``resamples`` rows of ``n`` indices drawn with replacement, a few rows at a time."""
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def percentile_ci(stats: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))]


def mean_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> list[float]:
    """CI of the mean of per-sample values (e.g. correct_teacher - correct_student, each in {-1, 0, 1})."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= 64:
        # few distinct values: resampling n items = drawing category counts from a multinomial (exact, O(categories))
        draws = rng.multinomial(len(values), counts / len(values), size=RESAMPLES)
        return percentile_ci(draws @ distinct / len(values), level)
    means = np.concatenate([values[index].mean(axis=1) for index in index_chunks(len(values), rng)])
    return percentile_ci(means, level)


def paired_ci(a: np.ndarray, b: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
              seed: int = 0, level: float = 0.95) -> list[float]:
    """CI of ``statistic(a[idx], b[idx])`` (row-wise) resampling pairs, e.g. interleaved latency runs."""
    rng = np.random.default_rng(seed)
    stats = np.concatenate([statistic(a[index], b[index]) for index in index_chunks(len(a), rng)])
    return percentile_ci(stats, level)
