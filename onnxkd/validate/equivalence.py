"""Do two models compute the same function? onnxruntime on shared random inputs, the largest relative gap.

Graph rewrites that must not change results (``onnxkd optimize``) are checked with this before their
output is written: a wrong fusion is a bug that would otherwise ship silently.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from onnxkd.data import input_specs, random_inputs
from onnxkd.model import ModelLike
from onnxkd.validate.inference import batch_limit, run_once
from onnxkd.validate.loaded import load_model
from onnxkd.validate.sessions import SessionConfig, create_session

# A rewrite may change float rounding, never results: relative to the largest output magnitude.
TOLERANCE = 1e-4


def max_relative_difference(reference: ModelLike, candidate: ModelLike,
                            input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int = 2,
                            seed: int = 0) -> float:
    """max over outputs of max|a - b| / max(max|a|, 1e-12), both run by onnxruntime on CPU."""
    ref, cand = load_model(reference, "original"), load_model(candidate, "optimized")
    specs = input_specs(ref.proto)
    feeds = random_inputs(specs, input_shapes, batch_limit(specs, batch), seed)
    config = SessionConfig(provider="cpu")
    expected = run_once(create_session(ref.source, config, "original")[0], feeds, "original")
    actual = run_once(create_session(cand.source, config, "optimized")[0], feeds, "optimized")
    worst = 0.0
    for a, b in zip(expected, actual):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12)))
    return worst


def check_same_function(reference: ModelLike, candidate: ModelLike, what: str,
                        input_shapes: Mapping[str, Sequence[int]] | None = None) -> float:
    """The gap ``max_relative_difference``; a RuntimeError (a bug of ours: exit 3) when above TOLERANCE."""
    gap = max_relative_difference(reference, candidate, input_shapes)
    if not gap <= TOLERANCE:  # also catches NaN
        raise RuntimeError(f"{what} differs from its input by {gap:.2e} (relative) on onnxruntime; "
                           "nothing was written. Please report this model")
    return gap
