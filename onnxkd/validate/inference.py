"""Run a session over a whole data set in batches, honouring a batch dim the model fixes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from onnxkd.data import Dataset, InputSpec
from onnxkd.data.batch_axes import batch_axis, moved
from onnxkd.errors import OnnxkdError


def batch_limit(specs: list[InputSpec], wanted: int) -> int:
    """Samples per run: ``wanted`` unless an input fixes its batch dim (e.g. exported with batch 1)."""
    fixed = {s.fixed_batch for s in specs if s.fixed_batch is not None}
    return fixed.pop() if len(fixed) == 1 else wanted


def run_dataset(session: ort.InferenceSession, data: Dataset, specs: list[InputSpec], batch: int,
                label: str) -> list[np.ndarray]:
    """All outputs for all samples, concatenated on axis 0 (a short last batch is padded, then trimmed). An output
    whose samples are on another axis ([time, batch, classes]) has them moved to axis 0 first."""
    size = batch_limit(specs, batch)
    fixed = any(s.fixed_batch is not None for s in specs)
    axes = {} if fixed else output_batch_axes(session, data, label)
    chunks: list[list[np.ndarray]] = []
    for arrays, _ in data.batches(size):
        n = len(next(iter(arrays.values())))
        if fixed and n < size:
            pad = np.arange(size) % n
            arrays = {k: v[pad] for k, v in arrays.items()}
        outputs = [np.atleast_1d(o) for o in run_once(session, arrays, label)]  # scalars cannot be concatenated
        outputs = [np.moveaxis(o, axes[i], 0) if i in axes else o for i, o in enumerate(outputs)]
        chunks.append([o[:n] if o.shape[0] == size else o for o in outputs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def output_batch_axes(session: ort.InferenceSession, data: Dataset, label: str) -> dict[int, int]:
    """Output position -> the axis holding its samples, for the outputs that do not hold them on axis 0 (two
    short runs, of one sample and of two)."""
    if len(data) < 2:
        return {}
    one, two = run_once(session, data.first(1), label), run_once(session, data.first(2), label)
    return moved({i: batch_axis(np.shape(a), np.shape(b)) for i, (a, b) in enumerate(zip(one, two))})


def run_once(session: ort.InferenceSession, feeds: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:  # shape mismatches inside the graph surface here, not at load time
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise OnnxkdError(f"{label}: onnxruntime failed to run ({lines[0][:240] if lines else exc!r})") from None
