"""Run a session over a whole data set in batches, honouring a batch dim the model fixes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from onnxkd.data import Dataset, InputSpec
from onnxkd.errors import OnnxkdError


def batch_limit(specs: list[InputSpec], wanted: int) -> int:
    """Samples per run: ``wanted`` unless an input fixes its batch dim (e.g. exported with batch 1)."""
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    return fixed.pop() if len(fixed) == 1 else wanted


def run_dataset(session: ort.InferenceSession, data: Dataset, specs: list[InputSpec], batch: int,
                label: str) -> list[np.ndarray]:
    """All outputs for all samples, concatenated on axis 0 (a short last batch is padded, then trimmed)."""
    size = batch_limit(specs, batch)
    fixed = any(s.fixed_batch is not None for s in specs)
    chunks: list[list[np.ndarray]] = []
    for arrays, _ in data.batches(size):
        n = len(next(iter(arrays.values())))
        if fixed and n < size:
            pad = np.arange(size) % n
            arrays = {k: v[pad] for k, v in arrays.items()}
        outputs = [np.atleast_1d(o) for o in run_once(session, arrays, label)]  # scalars cannot be concatenated
        chunks.append([o[:n] if o.shape[0] == size else o for o in outputs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def run_once(session: ort.InferenceSession, feeds: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:  # shape mismatches inside the graph surface here, not at load time
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise OnnxkdError(f"{label}: onnxruntime failed to run ({lines[0][:240] if lines else exc!r})") from None
