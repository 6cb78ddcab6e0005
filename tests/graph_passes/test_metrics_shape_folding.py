"""MACs of transformer exports whose shapes hide behind run-time shape arithmetic (legacy exporter)."""

from __future__ import annotations

import pytest

from onnxkd.graph_passes import metrics

T, D, HEADS, MLP, LAYERS, VOCAB, CLASSES = 12, 32, 4, 64, 2, 50, 5  # tests/models.py defaults


def _block_macs() -> int:
    projections = 4 * T * D * D  # q, k, v, output projection
    attention = 2 * HEADS * T * T * (D // HEADS)  # q @ k^T and softmax @ v
    mlp = 2 * T * D * MLP
    return LAYERS * (projections + attention + mlp)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name, head", [("transformer", D * CLASSES), ("gpt", T * D * VOCAB)])
def test_transformer_macs_match_hand_count(zoo_model, name, head, exporter):
    by_op, unknown = metrics.macs_and_unknown(zoo_model(name, exporter), {"input_ids": [1, T]})
    assert unknown == []
    assert sum(by_op.values()) == _block_macs() + head


def test_old_ir_models_keep_every_mac_node_countable():
    # IR version 3: initializers must also be graph inputs for inference to see folded values
    from pathlib import Path

    import onnx

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_inception_v2.onnx"
    assert onnx.load(str(path), load_external_data=False).ir_version < 4
    by_op, unknown = metrics.macs_and_unknown(path)
    assert unknown == []
    assert by_op["Gemm"] == 1024 * 1000


@pytest.mark.parametrize("op, inputs, large", [
    ("Expand", [[1.0], [1000, 1000]], True),  # a causal mask at a stand-in length
    ("Expand", [[1.0], [2, 4]], False),
    ("ConstantOfShape", [[1000, 1000]], True),
    ("Range", [0, 100000, 1], True),
    ("Range", [0, 12, 1], False),
])
def test_sizes_that_build_large_tensors_are_not_evaluated(monkeypatch, op, inputs, large):
    """Shape folding keeps only small tensors: one it would drop is not built at all (a [1000, 1000] causal mask
    at the stand-in length took seconds per layer), and small ones still fold."""
    import numpy as np
    from onnx import helper

    from onnxkd.graph_passes.analyze import shape_folding

    names = [f"i{k}" for k in range(len(inputs))]
    values = {n: np.asarray(v, np.float32 if (op, k) == ("Expand", 0) else np.int64)
              for k, (n, v) in enumerate(zip(names, inputs))}
    node = helper.make_node(op, names, ["out"])
    evaluated = []
    real = shape_folding.ReferenceEvaluator
    monkeypatch.setattr(shape_folding, "ReferenceEvaluator", lambda model: evaluated.append(1) or real(model))
    out = shape_folding._evaluate(node, values, {}, 17)
    assert (out is None) == large and bool(evaluated) != large
