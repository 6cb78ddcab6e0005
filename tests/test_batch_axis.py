"""A model whose batch is not axis 0 (a seq-first export: x[T, batch, C] -> y[batch, K]) is refused with one line:
onnxkd reads samples on axis 0, so it would feed time steps as samples. Fed so, onnxruntime ran it without an
error (wrong figures) and distillation failed with an internal error. inspect shows it, with the note."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from cli_runner import cli
from torch import nn

import onnxkd


class _SeqFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):  # x: [T, N, 8]
        return self.head(torch.relu(self.proj(x)).mean(0))


def _export(path, axes: dict, output_axes: dict, example) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_SeqFirst().eval(), (example,), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": output_axes})
    return str(path)


@pytest.mark.parametrize("axes", [{1: "batch"}, {0: "time", 1: "batch"}])
def test_a_seq_first_model_is_refused_and_inspect_notes_why(tmp_path, capsys, axes):
    model = _export(tmp_path / "seq_first.onnx", axes, {0: "batch"}, torch.randn(12, 2, 8))
    np.savez(tmp_path / "data.npz", x=np.zeros((16, 12, 8), np.float32))
    for args in (["compress", model, "--ratio", "0.5", "--data", str(tmp_path / "data.npz")],
                 ["validate", model, model, "--data", str(tmp_path / "data.npz")]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "its batch is axis 1 ('batch', axis 0 of the outputs)" in err and "batch-first" in err
    code, out, _ = cli(capsys, "inspect", model, "--json")
    assert code == 0 and "its batch is axis 1" in json.loads(out)["note"]


def test_a_fixed_batch_of_one_with_a_squeezed_output_is_read_as_it_is(tmp_path):
    """x[1, seq, 8] -> y[seq, 4]: axis 0 of the output is the input's axis 1, but a batch of one is a batch."""
    class Squeezed(_SeqFirst):
        def forward(self, x):
            return self.head(torch.relu(self.proj(x[0])))

    path = tmp_path / "squeezed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Squeezed().eval(), (torch.randn(1, 12, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {1: "seq"}, "y": {0: "seq"}})
    assert onnxkd.prune(path, 0.5, round_to=1).summary["pruned"] == 1
