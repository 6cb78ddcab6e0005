"""The timing protocol: warm-up excluded, teacher and student interleaved in turns, robust statistics, speed-up CI.

Interleaving (ABBA order) makes slow drifts of the machine (thermal, other processes, frequency
scaling) hit both models alike, so their ratio stays honest even when absolute times wander.

Each model runs for a turn of about ``turn_ms`` (several runs, the first untimed) before the other takes
over. Alternating single runs measured each model right after the other had filled the caches, and that
is not how a deployed model runs: against each model timed in its own process (the deployment figure,
benchmarks/latency_protocol.py), run-by-run interleaving put a VGG-like int8 model at 2.11x where its own
process gave 2.40x, and the zoo MobileNetV2's int8 at 1.66x where it gave 1.44x; turns gave 2.32x and 1.45x.
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
    turn_ms: float = 250.0  # each model runs about this long before the other's turn

    def to_dict(self) -> dict:
        return {"warmup": self.warmup, "runs": self.runs, "budget_s": self.budget_s, "min_runs": self.min_runs,
                "turn_ms": self.turn_ms}

    def runs_per_turn(self, run_ms: float) -> int:
        """Timed runs in one turn of a model taking ``run_ms`` a run: a turn lasts about ``turn_ms``, and each
        model gets at least 4 turns (ABBA twice, so that drift still hits both alike) within ``runs`` and
        within the time budget."""
        turn_ms = min(self.turn_ms, self.budget_s * 1000 / 4)
        return max(1, min(int(turn_ms // max(run_ms, 1e-3)), self.runs // 4))


def time_once(run: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1e6


def time_interleaved(run_teacher: Callable[[], object], run_student: Callable[[], object],
                     protocol: LatencyProtocol, stage: str = "latency",
                     progress: Progress | None = None) -> tuple[list[float], list[float]]:
    """Latency samples in ms for both models, measured in turns of alternating (ABBA) order: equally many of
    each, the i-th of one paired with the i-th of the other for the speed-up's interval."""
    for _ in range(protocol.warmup):
        run_teacher()
        run_student()
    # the faster model sets the turn: its turns last about turn_ms, the slower model's as many runs
    per_turn = protocol.runs_per_turn(min(time_once(run_teacher), time_once(run_student)))
    teacher: list[float] = []
    student: list[float] = []
    spent_ns = 0
    budget_ns = 2 * protocol.budget_s * 1e9  # both models' budgets together
    turn = 0
    while len(teacher) < protocol.runs and (len(teacher) < protocol.min_runs or spent_ns < budget_ns):
        count = min(per_turn, protocol.runs - len(teacher))
        for run, samples in ((run_teacher, teacher), (run_student, student))[:: 1 if turn % 2 == 0 else -1]:
            timed = _turn(run, count, settle=per_turn > 1)
            samples.extend(timed)
            spent_ns += sum(timed) * 1e6
        turn += 1
        if progress is not None:
            progress(stage, len(teacher), protocol.runs)
    return teacher, student


def _turn(run: Callable[[], object], count: int, settle: bool) -> list[float]:
    """``count`` timed runs in a row, after an untimed one that takes the switch from the other model when
    ``settle``."""
    if settle:
        run()
    return [time_once(run) for _ in range(count)]


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
