"""The timing protocol: warm-up excluded, teacher and student interleaved, robust statistics, speed-up CI.

Interleaving (ABBA order) makes slow drifts of the machine (thermal, other processes, frequency
scaling) hit both models alike, so their ratio stays honest even when absolute times wander.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from onnxkd.validate.bootstrap import paired_ci

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class LatencyProtocol:
    warmup: int = 5  # untimed runs per model, after the first (reported) run
    runs: int = 50  # timed runs per model, at most
    budget_s: float = 2.0  # ... or this much timed wall time per model, whichever comes first
    min_runs: int = 5  # a slow model still gets this many runs, so percentiles mean something

    def to_dict(self) -> dict:
        return {"warmup": self.warmup, "runs": self.runs, "budget_s": self.budget_s, "min_runs": self.min_runs}


def time_once(run: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1e6


def time_interleaved(run_teacher: Callable[[], object], run_student: Callable[[], object],
                     protocol: LatencyProtocol, stage: str = "latency",
                     progress: Progress | None = None) -> tuple[list[float], list[float]]:
    """Latency samples in ms for both models, measured in alternating order."""
    for _ in range(protocol.warmup):
        run_teacher()
        run_student()
    teacher: list[float] = []
    student: list[float] = []
    spent_ns = 0
    budget_ns = 2 * protocol.budget_s * 1e9  # both models' budgets together
    for i in range(protocol.runs):
        if i >= protocol.min_runs and spent_ns >= budget_ns:
            break
        first, second = (run_teacher, run_student) if i % 2 == 0 else (run_student, run_teacher)
        a, b = time_once(first), time_once(second)
        t, s = (a, b) if i % 2 == 0 else (b, a)
        teacher.append(t)
        student.append(s)
        spent_ns += (t + s) * 1e6
        if progress is not None:
            progress(stage, i + 1, protocol.runs)
    return teacher, student


def summarize(samples_ms: list[float], batch_size: int) -> dict:
    x = np.asarray(samples_ms, dtype=np.float64)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    return {
        "batch_size": batch_size,
        "n": int(len(x)),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean > 0 else None,
        "min": float(x.min()),
        "max": float(x.max()),
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "throughput_per_s": batch_size * 1000.0 / mean if mean > 0 else None,
        "samples": [float(v) for v in x],
    }


def speedup(teacher_ms: list[float], student_ms: list[float], seed: int = 0, level: float = 0.95) -> dict:
    """teacher p50 / student p50, with a bootstrap CI resampling the interleaved (teacher, student) pairs."""
    t = np.asarray(teacher_ms, dtype=np.float64)
    s = np.asarray(student_ms, dtype=np.float64)
    return {
        "p50": float(np.median(t) / np.median(s)),
        "ci95": paired_ci(t, s, _ratio_of_medians, seed, level),
        "mean": float(t.mean() / s.mean()),
    }


def _ratio_of_medians(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    return np.median(teacher, axis=1) / np.median(student, axis=1)
