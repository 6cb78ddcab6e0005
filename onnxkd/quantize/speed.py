"""Never slower: keep only the quantized nodes that pay, measured, or none at all.

The whole int8 model is timed against the float one with validate's protocol (interleaved, medians), at batch 1
and at the batch size; it pays when it is at least ``MIN_GAIN`` (1.05x) faster at both (``pays``). Where it is
not, onnxruntime's profiler says which nodes run slower in int8 than in float (time per original node, both
models); those go back to float and the model is quantized and timed again, up to ``rounds`` times. If it is
still slower, nothing is quantized: the float model is the answer. Once a model pays, the nodes still slower in
int8 are tried in float once, kept so only when that is measured faster (``TRIM_GAIN``). Before all that, narrow
convolution inputs are padded to the fast int8 kernel's channel multiple where the profiler shows the padded
convolutions faster (``PAD_GAIN``). Timing and profiling are handed in as functions, so the rule is testable with
an injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from onnxkd.quantize.profile import OVERHEAD, node_times
from onnxkd.validate import latency
from onnxkd.validate.latency import LatencyProtocol
from onnxkd.validate.sessions import SessionConfig, create_session

# candidate path -> {batch size: float p50 / int8 p50}
SpeedupsOf = Callable[[Path], dict[int, float]]
# model path -> {original node name: microseconds per run}
TimesOf = Callable[[Path], dict[str, float]]


@dataclass
class SpeedDecision:
    path: Path | None  # the int8 model kept (None: nothing paid, ship the float model)
    speedups: dict[int, float]  # of the kept model (or of the fastest candidate when none was kept)
    float_nodes: dict[str, str] = field(default_factory=dict)  # node -> why it stays float (speed)
    trials: list[dict] = field(default_factory=list)  # every candidate timed: excluded count, speed-ups

    @property
    def pays(self) -> bool:
        return self.path is not None


# int8 is kept only when it is at least this much faster at every batch size. A verdict of "1.02x" is noise on a
# shared CPU: benchmarks/int8.py timed 0.98x the zoo MobileNetV2 at 64x64 that onnxkd had timed (twice) at
# 1.02x, and int8 that gains under 5% is not worth its accuracy risk.
MIN_GAIN = 1.05


def pays(speedups: Mapping[int, float], threshold: float = MIN_GAIN) -> bool:
    """Whether int8 with these speed-ups ({batch size: float p50 / int8 p50}) is worth keeping."""
    return min(speedups.values()) >= threshold


# A model that pays may still run some nodes slower in int8 than in float: a narrow model's first convolution (3
# input channels), its classifier. Those are tried in float once, and kept so only when the whole model is this
# much faster (geometric mean over the batch sizes). Timed in turns (validate's protocol), the trained zoo
# MobileNetV2 at 224x224 went from 1.70x to 1.82x at batch 8 with its stem in float, while the zoo ResNet at
# 128x128 went from 1.38x to 1.27x (its stem's output feeds a residual Add), so the profile alone is no verdict.
# Only compute nodes are tried: float onnxruntime fuses a residual Add or a pool into the convolution next to it,
# so the profile shows them taking no time in float, and with them in float the int8 chain breaks.
TRIM_GAIN = 1.03

# Padding a narrow convolution input (channel_pad.py) computes the same outputs and changes nothing else: it is
# decided by the profiler, which times the padded convolutions, their Pad included, against the same convolutions
# unpadded, cheaper than timing the whole model again (the zoo ResNet's 3x3 stem at 128x128, batch 8: 2.16 ->
# 1.21 ms, the zoo models 6-14% faster as a whole; ResNet-18's 7x7 stem: 5.6 -> 6.5 ms). Kept when they take at
# most 1/PAD_GAIN of that time.
PAD_GAIN = 1.05


class Padding(Protocol):
    """Narrow convolution inputs padded to the fast int8 kernel's channel multiple (``ptq.Quantizer``)."""

    pad_channels: bool  # set: every model quantized from now on is padded

    def padded(self, path: Path) -> tuple[Path, list[str]] | None:
        """A padded copy of the model ``path`` and the convolutions padded; None when it has none."""


def keep_what_pays(quantize: Callable[[set[str]], Path], speedups_of: SpeedupsOf, times_of: TimesOf,
                   float_path: Path, candidates: set[str], threshold: float = MIN_GAIN,
                   rounds: int = 2, trimmable: set[str] | None = None,
                   padding: Padding | None = None) -> SpeedDecision:
    """The int8 model whose speed-up is >= ``threshold`` at every batch, leaving in float the nodes the profiler
    shows slower in int8 where that is needed, or measured faster; ``candidates``: the nodes that may be returned
    to float; ``trimmable``: those tried in float once int8 pays (default: the candidates); ``padding``: narrow
    convolution inputs padded from the start when the profiler shows them faster so."""
    excluded: set[str] = set()
    speedups_of = confirmed(speedups_of, threshold)
    slower_in_int8 = _Profiles(times_of, float_path)
    path, padded = _padded_if_faster(quantize(excluded), padding, slower_in_int8.times)
    speedups = fastest = speedups_of(path)
    trials = [_trial(excluded, speedups)] + ([padded] if padded else [])
    slow_reasons: dict[str, str] = {}
    for _ in range(rounds):
        if pays(speedups, threshold):
            break
        slower = slower_in_int8(path, candidates - excluded)
        if not slower:
            break
        slow_reasons.update(slower)
        excluded |= set(slower)
        path = quantize(excluded)
        speedups = speedups_of(path)
        trials.append(_trial(excluded, speedups))
        fastest = max(fastest, speedups, key=mean)
    if not pays(speedups, threshold):
        # the fastest int8 tried is what int8 can do here: nodes back in float can make a model slower still
        # (conversions around them), and the last try's figure would then undersell it (EfficientNet-like SiLU
        # model: 0.85x with every op int8, 0.47x after the fallback)
        return SpeedDecision(None, fastest, {}, trials)
    slower = slower_in_int8(path, (trimmable if trimmable is not None else candidates) - excluded)
    if slower:
        trimmed = quantize(excluded | set(slower))
        trimmed_speedups = speedups_of(trimmed)
        trials.append(_trial(excluded | set(slower), trimmed_speedups))
        if pays(trimmed_speedups, threshold) and mean(trimmed_speedups) >= TRIM_GAIN * mean(speedups):
            return SpeedDecision(trimmed, trimmed_speedups, {**slow_reasons, **slower}, trials)
    return SpeedDecision(path, speedups, slow_reasons, trials)


def _padded_if_faster(path: Path, padding: Padding | None, times_of: TimesOf) -> tuple[Path, dict | None]:
    """``path``, or its padded copy when the padded convolutions run faster in the profiler (and then every later
    candidate is padded too); with the decision as a trial, if there was one to make."""
    padded = padding.padded(path) if padding is not None else None
    if padded is None:
        return path, None
    copy, convolutions = padded
    before, after = times_of(path), times_of(copy)
    us = {"unpadded": sum(before.get(c, 0.0) for c in convolutions),
          "padded": sum(after.get(c, 0.0) for c in convolutions)}
    kept = 0 < us["padded"] * PAD_GAIN <= us["unpadded"]  # no profile (an injected one without them): unpadded
    padding.pad_channels = kept
    return (copy if kept else path), {"padded": convolutions, "profile_us": us, "kept": kept}


def memoized(times_of: TimesOf) -> TimesOf:
    """``times_of`` that profiles each model once (the float model is compared with every candidate)."""
    cache: dict[Path, dict[str, float]] = {}

    def times(path: Path) -> dict[str, float]:
        if path not in cache:
            cache[path] = times_of(path)
        return cache[path]

    return times


class _Profiles:
    """Candidate int8 model -> the nodes it runs slower than the float model does, with why."""

    def __init__(self, times_of: TimesOf, float_path: Path):
        self.times, self.float_path = memoized(times_of), float_path

    def __call__(self, path: Path, candidates: set[str]) -> dict[str, str]:
        float_times = self.times(self.float_path)
        return {name: f"slower in int8 ({int8_us:.0f} vs {float_times.get(name, 0.0):.0f} us per run)"
                for name, int8_us in self.times(path).items()
                if name in candidates and int8_us > float_times.get(name, 0.0)}


def mean(speedups: Mapping[int, float]) -> float:
    """Geometric mean over the batch sizes."""
    return float(np.exp(np.mean(np.log(list(speedups.values())))))


# A speed-up this close to the threshold is timed twice: on a 2-core CPU one timing of the zoo MobileNetV2 at
# 64x64 read 0.85x and another 1.86x while another process ran; a verdict this close must not hang on one.
CLOSE = 0.1


def confirmed(speedups_of: SpeedupsOf, threshold: float) -> SpeedupsOf:
    """``speedups_of`` that times a candidate again, and averages, when a batch's speed-up is near ``threshold``."""
    def timed(path: Path) -> dict[int, float]:
        first = speedups_of(path)
        if all(abs(v - threshold) >= CLOSE for v in first.values()):
            return first
        second = speedups_of(path)
        return {batch: (first[batch] + second[batch]) / 2 for batch in first}

    return timed


def _trial(excluded: set[str], speedups: Mapping[int, float]) -> dict:
    return {"float_nodes": len(excluded), "speedups": {str(b): s for b, s in speedups.items()}}


def onnxruntime_speedups(float_path: Path, feeds: dict[int, dict[str, np.ndarray]], config: SessionConfig,
                         protocol: LatencyProtocol, progress: latency.Progress | None = None) -> SpeedupsOf:
    """``speedups_of`` timing candidates against the float model on onnxruntime, one feed per batch size."""
    reference, _ = create_session(str(float_path), config, "float model")

    def speedups_of(candidate: Path) -> dict[int, float]:
        session, _ = create_session(str(candidate), config, "int8 model")
        result = {}
        for batch, feed in feeds.items():
            session.run(None, feed)  # the first run allocates: not a sample
            reference.run(None, feed)
            float_ms, int8_ms = latency.time_interleaved(lambda: reference.run(None, feed),
                                                         lambda: session.run(None, feed), protocol,
                                                         stage=f"timing int8 vs float, batch {batch}",
                                                         progress=progress)
            result[batch] = float(np.median(float_ms) / np.median(int8_ms))
        return result

    return speedups_of


def onnxruntime_times(feed: dict[str, np.ndarray], config: SessionConfig) -> TimesOf:
    def times_of(path: Path) -> dict[str, float]:
        times = node_times(path, feed, config)
        times.pop(OVERHEAD, None)
        return times

    return times_of
