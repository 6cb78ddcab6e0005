"""torch's legacy exporter bakes the example's sequence length into nn.MultiheadAttention's key/value view
([12, batch * heads, head_dim], 12 a constant) while the input declares the length dynamic. Such a file runs at
that length only; the analysis now sees it there, and cuts its attention heads and MLP widths as it does for the
dynamo export of the same layers, instead of freezing them at "unknown shapes"."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from prune_oracle import assert_close, random_plan, run, zeroed_original
from torch import nn

from onnxkd.graph_passes.api import channel_groups, prune, prune_with_plan
from onnxkd.model import to_proto

T, C = 12, 8


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(C, 64)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True), 2,
                                             enable_nested_tensor=False)
            self.head = nn.Linear(64, 4)

        def forward(self, x):
            return self.head(self.enc(self.inp(x)).mean(1))

    path = tmp_path_factory.mktemp("baked") / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder().eval(), (torch.randn(2, T, C),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}})
    return str(path)


def _feeds(batch: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((batch, T, C)).astype(np.float32)}


def test_the_export_runs_at_its_traced_length_only(encoder):
    session = ort.InferenceSession(encoder, providers=["CPUExecutionProvider"])
    session.run(None, _feeds())
    with pytest.raises(Exception, match="Reshape"):
        session.run(None, {"x": np.zeros((3, T + 8, C), np.float32)})


def test_heads_are_cut_and_the_pruned_model_matches_the_oracle(encoder):
    _, groups = channel_groups(encoder)
    unknown = [g.frozen for g in groups if "unknown shapes" in (g.frozen or "")]
    assert not unknown, unknown
    heads = [g for g in groups if g.prunable and g.size == 4]
    assert len(heads) == 2  # one group of 4 heads per layer
    result = prune(encoder, 0.5)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    prepared, groups = channel_groups(encoder)
    assert_close(run(result.model, _feeds()), run(zeroed_original(prepared, groups, result.plan), _feeds()))
    rng = np.random.default_rng(1)
    for _ in range(2):  # unequal plans
        plan = random_plan(groups, rng)
        pruned = prune_with_plan(encoder, plan)
        prepared, groups = channel_groups(encoder)
        assert_close(run(pruned.model, _feeds(2)), run(zeroed_original(prepared, groups, plan), _feeds(2)))


def test_a_dynamo_lstm_export_with_its_length_baked_into_a_reshape(tmp_path):
    """torch's default exporter, asked for a dynamic length, still writes [12, -1, hidden] after the LSTM."""
    torch.manual_seed(0)

    class Reader(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(C, 32), nn.Linear(32, 4)

        def forward(self, x):  # x: [T, batch, C]
            steps, _ = self.lstm(x)
            return self.head(steps[-1])

    path = str(tmp_path / "reader.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Reader().eval(), (torch.randn(T, 2, C),), path,
                          dynamic_shapes=({0: torch.export.Dim("time"), 1: torch.export.Dim("batch")},))
    _, groups = channel_groups(path)
    assert not [g.frozen for g in groups if "unknown shapes" in (g.frozen or "")]
    result = prune(path, 0.5, round_to=1)
    assert result.summary["pruned"] == 1  # the hidden units (the other group is the output)
    prepared, groups = channel_groups(path)
    feeds = {"x": np.random.default_rng(0).standard_normal((T, 3, C)).astype(np.float32)}
    assert_close(run(result.model, feeds), run(zeroed_original(prepared, groups, result.plan), feeds))
