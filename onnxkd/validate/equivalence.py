"""Do two models compute the same function? Both on onnxruntime, on the user's samples when there are some.

Graph rewrites that must not change results (``onnxkd optimize``) are checked with this before their
output is written: a wrong fusion is a bug that would otherwise ship silently.

Closeness has an absolute floor: ``max|a - b| <= ATOL + RTOL * scale``, with ``scale`` the largest magnitude
of the output over the batch. Relative error alone false-alarms on outputs near 0: a text detector's
sigmoid map on random inputs sits near 1e-6, where float rounding of 1.5e-7 reads as a 10% gap.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from onnxkd.data import Dataset, input_specs, random_inputs
from onnxkd.model import ModelLike
from onnxkd.validate.inference import batch_limit, run_once
from onnxkd.validate.loaded import load_model
from onnxkd.validate.sessions import SessionConfig, create_session

# A rewrite may change float rounding, never results.
RTOL = 1e-4  # of the output's scale
ATOL = 1e-5  # float32 rounding of sums over many terms, for outputs whose scale is near 0
SAMPLES = 8  # of the user's data; random inputs use 2


def compare(reference: ModelLike, candidate: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None,
            samples: Dataset | None = None, seed: int = 0) -> dict:
    """Both models on onnxruntime (CPU) on the first samples of ``samples``, else on random inputs of
    ``input_shapes``: the largest absolute gap over the outputs, the tolerance it is held to, and which
    output came closest to it (``margin`` = gap / tolerance, <= 1 passes)."""
    ref, cand = load_model(reference, "original"), load_model(candidate, "optimized")
    specs = input_specs(ref.proto)
    if samples is not None:
        feeds, origin = samples.first(batch_limit(specs, min(SAMPLES, len(samples)))), "data"
    else:
        feeds, origin = random_inputs(specs, input_shapes, batch_limit(specs, 2), seed), "random"
    config = SessionConfig(provider="cpu")
    expected = run_once(create_session(ref.source, config, "original")[0], feeds, "original")
    actual = run_once(create_session(cand.source, config, "optimized")[0], feeds, "optimized")
    worst = None  # the output closest to its tolerance (with no gap anywhere: the first, with its own tolerance)
    for a, b in zip(expected, actual):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            worst = {"max_abs_difference": float("inf"), "tolerance": ATOL, "margin": float("inf")}
            break
        if a.size:
            gap = float(np.max(np.abs(a - b)))
            tolerance = ATOL + RTOL * float(np.max(np.abs(a)))
            if worst is None or not gap / tolerance <= worst["margin"]:  # NaN counts as the worst
                worst = {"max_abs_difference": gap, "tolerance": tolerance, "margin": gap / tolerance}
    worst = worst or {"max_abs_difference": 0.0, "tolerance": ATOL, "margin": 0.0}  # no output holds a value
    return dict(worst, inputs=origin, samples=len(next(iter(feeds.values()))) if feeds else 0)


def check_same_function(reference: ModelLike, candidate: ModelLike, what: str,
                        input_shapes: Mapping[str, Sequence[int]] | None = None,
                        samples: Dataset | None = None) -> dict:
    """``compare``; a RuntimeError (a bug of ours: exit 3) when a gap exceeds its tolerance."""
    check = compare(reference, candidate, input_shapes, samples)
    if not check["margin"] <= 1:  # also catches NaN
        raise RuntimeError(f"{what} differs from its input by {check['max_abs_difference']:.2e} on onnxruntime, "
                           f"above the tolerance {check['tolerance']:.2e} ({ATOL:g} + {RTOL:g} x the output's "
                           f"scale, on {check['samples']} {_inputs(check)}); nothing was written. Please report "
                           "this model")
    return check


def describe(check: dict) -> str:
    """One line for summaries: the figure, the threshold and what it was measured on."""
    return (f"max abs. diff. {check['max_abs_difference']:.1e} <= {check['tolerance']:.1e} "
            f"on {check['samples']} {_inputs(check)}")


def _inputs(check: dict) -> str:
    return "samples of the data" if check["inputs"] == "data" else "random inputs"
