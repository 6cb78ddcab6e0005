"""What a notebook shows when a cell ends in an API call: the result's figures, not its whole graph.

Every public result holds an onnx-ir model; its dataclass repr printed the graph, every initializer included
(tens of thousands of lines for a real model), with the figures lost somewhere in the middle.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxkd
from onnxkd.validate.latency import LatencyProtocol

FAST = LatencyProtocol(warmup=1, runs=3, budget_s=0.2, min_runs=2)
SHORT = 4000  # characters: the figures of one result fit; a graph dump of the zoo ResNet is many times this


@pytest.fixture(scope="module")
def teacher(zoo_model):
    return zoo_model("resnet")


@pytest.fixture(scope="module")
def images():
    return {"x": np.random.default_rng(0).normal(size=(32, 3, 32, 32)).astype(np.float32)}


def _shows_figures_not_the_graph(result, *figures: str, most: int = SHORT) -> None:
    text = repr(result)
    assert len(text) < most and "Tensor(" not in text and "initializers=" not in text
    for figure in figures:
        assert figure in text


def test_prune_and_optimize_show_their_summary(teacher):
    pruned = onnxkd.prune(teacher, ratio=0.5)
    _shows_figures_not_the_graph(pruned, "PruneResult(", f"'channels_after': {pruned.summary['channels_after']}")
    optimized = onnxkd.optimize(pruned.model)
    _shows_figures_not_the_graph(optimized, "OptimizeResult(", f"nodes_after={optimized.nodes_after}")
    # every result has a JSON-ready to_dict (OptimizeResult had none)
    import json

    for result in (pruned, optimized):
        assert json.loads(json.dumps(result.to_dict(), allow_nan=False))


def test_distill_validate_and_compress_show_their_figures(teacher, images, tmp_path):
    student = onnxkd.prune(teacher, ratio=0.5).model
    distilled = onnxkd.distill(teacher, student, images, epochs=1)
    _shows_figures_not_the_graph(distilled, "DistillResult(", f"best_epoch={distilled.best_epoch}")
    validated = onnxkd.validate(teacher, distilled.model, data=images, warmup=1, runs=3, budget_s=0.2)
    # one line of headline figures (it held both models' latency samples at two batch sizes: 6 KB)
    _shows_figures_not_the_graph(validated, "ValidationResult(passed=", f"{validated.speedup['p50']:.2f}x",
                                 f"MACs {validated.speedup['macs_reduction']:.2f}x fewer", most=200)
    compressed = onnxkd.compress(teacher, 0.5, images, epochs=1, output=tmp_path / "s.onnx", report=False)
    _shows_figures_not_the_graph(compressed, "CompressResult(", str(tmp_path / "s.onnx"))


def test_quantize_shows_its_decision(teacher, images):
    result = onnxkd.quantize(teacher, images, protocol=FAST, speedups_of=lambda *a, **k: lambda path: {1: 0.8, 8: 0.8},
                             times_of=lambda path: {})
    _shows_figures_not_the_graph(result, "QuantizeResult(", "int8=False", "speedups=")
