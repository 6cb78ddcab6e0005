"""Graphs exported for one batch size (the ONNX zoo's, many converters'): run other batches in chunks.

Such a graph declares dim 0 of every input and output as the same number N and often bakes N into shape
constants (a Reshape to [1, 4, 28, 56, 56]). onnxruntime only accepts batches of N; distillation and
scoring feed batches of their own size. So a batch of B != N runs as ceil(B / N) chunks of N, the last one
padded by repeating its samples, and the results are concatenated and trimmed to B. Gradients flow through
the chunks as through one call.
"""

from __future__ import annotations

from typing import Callable, Sequence

import onnx_ir as ir
import torch


def declared_batch(graph: ir.Graph) -> int | None:
    """N when every input (initializers listed as inputs aside) and output declares dim 0 as the number N, else None
    (a free batch dim)."""
    inputs = [v for v in graph.inputs if v.name not in graph.initializers]
    values = inputs + list(graph.outputs)
    dims = set()
    for value in values:
        shape = value.shape
        if shape is None or len(shape) == 0 or not isinstance(shape[0], int) or shape[0] < 1:
            return None
        dims.add(shape[0])
    return dims.pop() if len(dims) == 1 and inputs else None


def run_in_chunks(run: Callable, inputs: Sequence[torch.Tensor], batch: int, capture: Sequence[str] | None):
    """``run(inputs, capture)`` over chunks of ``batch`` samples, stitched back along dim 0."""
    total = inputs[0].shape[0]
    results = []
    steps = torch.arange(batch, device=inputs[0].device)
    for start in range(0, total, batch):
        rows = start + steps % min(batch, total - start)  # a short last chunk repeats its samples
        results.append(run([x.index_select(0, rows) for x in inputs], capture))
    if capture is None:
        return _stitch(results, batch, total)
    outputs = _stitch([r[0] for r in results], batch, total)
    captured = {name: _stitch_one([r[1][name] for r in results], batch, total) for name in results[0][1]}
    return outputs, captured


def _stitch(chunks: list[tuple], batch: int, total: int) -> tuple:
    return tuple(_stitch_one([chunk[k] for chunk in chunks], batch, total) for k in range(len(chunks[0])))


def _stitch_one(values: list, batch: int, total: int):
    first = values[0]
    if not isinstance(first, torch.Tensor) or first.dim() == 0 or first.shape[0] != batch:
        return first  # not batched (a shape, a scalar): the same in every chunk
    return torch.cat(values, dim=0)[:total]
