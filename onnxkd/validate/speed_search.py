"""The smallest pruning ratio whose measured speed-up meets a target (``prune --target-speedup``).

Pruning and timing are handed in as functions, so the search is pure and testable with a fake clock,
and ``compress`` can reuse it with its own pruning. Speed-up is noisy and only roughly monotone in
the ratio: the bisection only decides where to measure next; the answer is the smallest ratio among
*all* measured candidates that met the target (a smaller ratio keeps more accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxkd.data import input_specs, random_inputs
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.api import measure
from onnxkd.model import ModelLike
from onnxkd.validate import latency
from onnxkd.validate.inference import batch_limit, run_once
from onnxkd.validate.latency import LatencyProtocol
from onnxkd.validate.loaded import load_model
from onnxkd.validate.sessions import SessionConfig, create_session


@dataclass(frozen=True)
class Candidate:
    ratio: float
    speedup: float  # teacher / candidate latency, as ``speedup_of`` measured it
    macs_ratio: float | None  # candidate MACs / reference MACs (None where MACs cannot be counted)

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "speedup": self.speedup, "macs_ratio": self.macs_ratio}


# Below this teacher p50 a multi-threaded pool's wake-ups are a large part of each run, and speed-ups moved
# between processes (zoo ResNet 1.1x-2.2x at 2 threads, 2.13x-2.22x at 1; README, latency section).
SMALL_MODEL_MS = 1.0


@dataclass
class SpeedSearch:
    ratio: float  # the chosen ratio: the smallest measured one meeting the target
    speedup: float  # measured at ``ratio``
    target: float
    max_ratio: float
    candidates: list[Candidate] = field(default_factory=list)  # in the order they were measured
    teacher_ms: float | None = None  # the teacher's p50 in the last timing (None: an injected timer)
    threads: int | None = None  # intra-op threads the candidates were timed with (0 = onnxruntime's default)

    @property
    def warning(self) -> str | None:
        """Advice when the figures above are likely to move between runs (a small model on several threads)."""
        if self.teacher_ms is None or self.teacher_ms >= SMALL_MODEL_MS or self.threads == 1:
            return None
        return (f"the teacher runs in {self.teacher_ms:.2f} ms: with several threads, speed-ups of a model this "
                "small move between runs; --threads 1 times them stably")

    def to_dict(self) -> dict:
        return {"target": self.target, "ratio": self.ratio, "speedup": self.speedup, "max_ratio": self.max_ratio,
                "candidates": [c.to_dict() for c in self.candidates], "teacher_ms": self.teacher_ms,
                "threads": self.threads, "warning": self.warning}


# (ratio, None) before a candidate is timed, (ratio, Candidate) once it is
SearchProgress = Callable[[float, "Candidate | None"], None]


def search_ratio(prune_at: Callable[[float], ir.Model], speedup_of: Callable[[ir.Model], float], target: float,
                 max_ratio: float = 0.9, steps: int = 6, progress: SearchProgress | None = None, *,
                 prepare: Callable[[ir.Model], ir.Model] | None = None,
                 reference: ir.Model | None = None) -> SpeedSearch:
    """Bisect ``[0, max_ratio]`` for the smallest ratio whose speed-up is >= ``target``.

    Measures ``max_ratio`` first (raising ``OnnxkdError`` when even that is too slow, twice), then ratio 0 (an
    optimised but unpruned model may already be fast enough), then ``steps`` bisection points.
    ``prepare`` turns each pruned candidate into what will ship (e.g. ``optimize``) before timing;
    MACs are counted on the pruned candidate, relative to ``reference`` (default: ``prune_at(0.0)``).
    """
    if target <= 0:
        raise OnnxkdError(f"--target-speedup {target}: must be > 0")
    if not 0 <= max_ratio < 1:
        raise OnnxkdError(f"--max-ratio {max_ratio}: must be in [0, 1)")
    if steps < 0:
        raise OnnxkdError(f"steps {steps}: must be >= 0")
    base_macs = _macs(reference if reference is not None else prune_at(0.0))
    candidates: list[Candidate] = []

    def measure_at(ratio: float) -> Candidate:
        if progress is not None:
            progress(ratio, None)
        pruned = prune_at(ratio)
        macs = _macs(pruned)
        timed = prepare(pruned) if prepare is not None else pruned
        del pruned  # large models: keep one candidate in memory at a time
        candidate = Candidate(ratio, float(speedup_of(timed)),
                              macs / base_macs if macs is not None and base_macs else None)
        candidates.append(candidate)
        if progress is not None:
            progress(ratio, candidate)
        return candidate

    top = measure_at(max_ratio)
    if top.speedup < target:  # once more before giving up: one low timing must not stop the run
        top = max(top, measure_at(max_ratio), key=lambda c: c.speedup)
    if top.speedup < target:
        raise OnnxkdError(
            f"--target-speedup {target:g}x not reached: the best speed-up is {top.speedup:.2f}x at ratio "
            f"{max_ratio:g} (--max-ratio); lower --target-speedup or raise --max-ratio")
    if max_ratio > 0 and measure_at(0.0).speedup < target:
        low, high = 0.0, max_ratio
        for _ in range(steps):
            mid = (low + high) / 2
            if measure_at(mid).speedup >= target:
                high = mid
            else:
                low = mid
    chosen = min((c for c in candidates if c.speedup >= target), key=lambda c: c.ratio)
    return SpeedSearch(chosen.ratio, chosen.speedup, target, max_ratio, candidates)


def _macs(model: ir.Model) -> int | None:
    return measure(model, "of")["macs_of"]  # the prune summary's own count (None where it cannot count)


def onnxruntime_speedup(teacher: ModelLike, session_config: SessionConfig | None = None, batch: int = 1,
                        protocol: LatencyProtocol | None = None, *,
                        input_shapes: Mapping[str, Sequence[int]] | None = None,
                        seed: int = 0) -> Callable[[ir.Model], float]:
    """``speedup_of`` for ``search_ratio``: p50(teacher) / p50(candidate) on onnxruntime, timed interleaved.

    The teacher's session is created once; each candidate gets a fresh session with the same config,
    fed the same random inputs (a free batch dim becomes ``batch``, other dynamic dims need
    ``input_shapes``), so candidates differ only in the model.
    """
    session_config, protocol = session_config or SessionConfig(), protocol or LatencyProtocol()
    t_model = load_model(teacher, "teacher")
    specs = input_specs(t_model.proto)
    if not specs:
        raise OnnxkdError("teacher: the model has no inputs to feed")
    feeds = random_inputs(specs, dict(input_shapes or {}), batch=batch_limit(specs, batch), seed=seed)
    t_session, _ = create_session(t_model.source, session_config, "teacher")
    run_once(t_session, feeds, "teacher")  # a bad input shape fails here, once, with the teacher's name

    def speedup_of(candidate: ir.Model) -> float:
        c_model = load_model(candidate, "candidate")
        c_session, _ = create_session(c_model.source, session_config, "candidate")
        run_once(c_session, feeds, "candidate")  # the first run (allocation) is not a sample
        t_ms, c_ms = latency.time_interleaved(lambda: t_session.run(None, feeds), lambda: c_session.run(None, feeds),
                                              protocol, stage="speed search")
        speedup_of.teacher_ms = float(np.median(t_ms))
        return float(np.median(t_ms) / np.median(c_ms))

    speedup_of.teacher_ms = None
    return speedup_of


def timed_search(teacher: ModelLike, prune_at: Callable[[float], ir.Model], target: float, *, max_ratio: float = 0.9,
                 batch: int = 1, session_config: SessionConfig | None = None, protocol: LatencyProtocol | None = None,
                 optimize_candidates: bool = True, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 progress: SearchProgress | None = None) -> SpeedSearch:
    """``search_ratio`` timed on onnxruntime against ``teacher`` as given, each candidate optimized first
    (``optimize_candidates``) as ``compress`` ships it; MACs ratios against ``teacher``."""
    from onnxkd.model import load

    prepare = None
    if optimize_candidates:
        from onnxkd.graph_passes.optimize import optimize

        def prepare(candidate: ir.Model) -> ir.Model:
            return optimize(candidate).model

    session_config = session_config or SessionConfig()
    speedup_of = onnxruntime_speedup(teacher, session_config, batch, protocol, input_shapes=input_shapes)
    search = search_ratio(prune_at, speedup_of, target, max_ratio, progress=progress, prepare=prepare,
                          reference=load(teacher))
    search.teacher_ms, search.threads = getattr(speedup_of, "teacher_ms", None), session_config.threads
    return search
