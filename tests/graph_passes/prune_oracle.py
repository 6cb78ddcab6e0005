"""The pruning oracle: pruned(x) == original(x) with the removed channels zeroed where they are consumed.

Zeroing happens in the prepared (untied) copy of the original: the consumer-side slices ("in": the
next Conv's input channels, Gemm/MatMul input rows, the attention output projection's head rows).
"""

from __future__ import annotations

import os

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxkd.graph_passes.prune.rewrite import removed_indices
from onnxkd.model import to_proto


def zeroed_original(prepared: ir.Model, groups, plan) -> ir.Model:
    """Zero the removed channels' consumer slices in ``prepared`` (modified in place, and returned)."""
    model = prepared
    for group in groups:
        kept = plan.get(group.id)
        if kept is None:
            continue
        removed = removed_indices(group, kept)
        for s in group.slices:
            if s.role != "in" or not removed:
                continue
            value = model.graph.initializers[s.name]
            array = value.const_value.numpy().copy()
            moved = np.moveaxis(s.view(array), s.axis, 0)  # a view: zeroing writes through
            for c in removed:
                moved[s.offset + c * s.block: s.offset + (c + 1) * s.block] = 0
            value.const_value = ir.Tensor(array, name=s.name)
    return model


def random_plan(groups, rng: np.random.Generator) -> dict[int, list[int]]:
    """A plan keeping a random, non-empty subset of every prunable group (unequal counts across groups)."""
    return {g.id: sorted(rng.choice(g.size, int(rng.integers(1, g.size + 1)), replace=False).tolist())
            for g in groups if g.prunable}


def random_inputs(model, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    proto = to_proto(model)
    feeds = {}
    inits = {i.name for i in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        if tensor.elem_type == 7:  # int64 token ids
            feeds[value.name] = rng.integers(0, 10, size=shape).astype(np.int64)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run(model, feeds) -> list[np.ndarray]:
    if isinstance(model, ir.Model):
        ir.external_data.load_to_model(model)  # onnxruntime reads bytes: no external files
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, (str, os.PathLike)) else to_proto(model).SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-4) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        scale = max(float(np.abs(e).max()), 1e-6)
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale * 10)


def prunable_heads(path) -> list[tuple[int, int]]:
    """(size, channel block) of every prunable group cut in blocks: a transformer's attention heads."""
    from onnxkd.graph_passes.api import channel_groups

    _, groups = channel_groups(path)
    return [(g.size, g.channel_block) for g in groups if g.prunable and g.channel_block > 1]


def prune_and_check(path, feeds: list[dict[str, np.ndarray]], ratio: float = 0.5):
    """``prune(path, ratio, round_to=1)``, checked against the oracle on each of ``feeds``; the result."""
    from onnxkd.graph_passes.api import channel_groups, prune

    result = prune(path, ratio, round_to=1)
    prepared, groups = channel_groups(path)
    zeroed = zeroed_original(prepared, groups, result.plan)
    for inputs in feeds:
        assert_close(run(result.model, inputs), run(zeroed, inputs))
    return result
