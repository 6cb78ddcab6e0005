"""Pruning the hidden units of LSTM, GRU and RNN nodes (and the channels that feed them), as both torch exporters
write them and as hand-built graphs with initial states and peepholes: valid models equal to the zero-at-consumers
oracle, at other batch sizes and sequence lengths than the export's. Before, every recurrent node froze its input
and its hidden size: a 2-layer LSTM classifier kept 1.00x of its MACs at --ratio 0.5."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import assert_close, prune_and_check, run
from torch import nn

import onnxkd
from onnxkd.graph_passes.api import channel_groups, prune
from onnxkd.graph_passes.normalize.zero_states import DropZeroInitialStatesPass
from onnxkd.model import load

HIDDEN = 24
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class Tagger(nn.Module):
    """x [batch, seq, 6] -> a 2-layer recurrent net over a projection -> per-step and last-step scores."""

    def __init__(self, cell: type, bidirectional: bool):
        super().__init__()
        self.proj = nn.Linear(6, 16)
        self.rnn = cell(16, HIDDEN, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 5)

    def forward(self, x):
        y, _ = self.rnn(torch.relu(self.proj(x)))
        return self.head(y[:, -1])


def _export(tmp_path, cell: str, bidirectional: bool, exporter: str):
    torch.manual_seed(0)
    model, x = Tagger(CELLS[cell], bidirectional).eval(), torch.rand(2, 7, 6)
    path = tmp_path / f"{cell}-{bidirectional}-{exporter}.onnx"
    if exporter == "legacy":
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 1: "seq"}}, dynamo=False)
    else:
        dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=256)}
        torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamic_shapes=(dims,), dynamo=True)
    return path


def _feeds(path):
    """Other batch sizes and sequence lengths than the export's (dynamo fixes a bidirectional LSTM's length)."""
    rng = np.random.default_rng(0)
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    fixed = dims[1].dim_value or None
    return [{"x": rng.standard_normal((batch, fixed or seq, 6)).astype(np.float32)} for batch, seq in [(3, 5), (1, 11)]]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("cell,bidirectional", [("lstm", False), ("lstm", True), ("gru", False), ("gru", True),
                                                ("rnn", False)])
def test_torch_exports_cut_hidden_units_as_the_oracle_says(tmp_path, cell, bidirectional, exporter):
    path = _export(tmp_path, cell, bidirectional, exporter)
    _, groups = channel_groups(path)
    hidden = [g for g in groups if g.size == HIDDEN]
    assert len(hidden) == 2 and all(g.prunable for g in hidden), [(g.size, g.frozen) for g in groups]
    result = prune_and_check(path, _feeds(path))
    onnxkd.save(result.model, tmp_path / "pruned.onnx")
    onnx.checker.check_model(str(tmp_path / "pruned.onnx"), full_check=True)
    sizes = [node.attributes["hidden_size"].value for node in result.model.graph if node.op_type == cell.upper()]
    assert sizes == [HIDDEN // 2] * 2 or (cell, exporter) == ("rnn", "dynamo")  # dynamo writes nn.RNN out in ops
    assert result.summary["params_after"] < 0.55 * result.summary["params_before"]  # LSTM 0.3, dynamo's RNN ops 0.52


def test_the_pruned_lstm_runs_alike_in_the_torch_bridge(tmp_path):
    path = _export(tmp_path, "lstm", True, "legacy")
    result = prune(path, 0.5, round_to=1)
    module = onnxkd.to_torch(result.model).eval()
    for feed in _feeds(path):
        with torch.no_grad():
            bridged = module(torch.from_numpy(feed["x"]))
        bridged = bridged[0] if isinstance(bridged, (tuple, list)) else bridged
        assert_close([bridged.numpy()], run(result.model, feed)[:1])


def _hand_built_lstm(initial_states: str) -> onnx.ModelProto:
    """x [seq, 2, 4] -> LSTM (hidden 6, peepholes) -> Y_h [1, 2, 6] -> Squeeze -> Gemm -> [2, 3]. ``initial_states``:
    "initializers" (nonzero h0 and c0), "input" (h0 a graph input) or "none". (onnxruntime runs layout 0 only.)"""
    rng = np.random.default_rng(1)
    hidden, gates = 6, 4

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * 0.5, name)

    inits = [init("W", 1, gates * hidden, 4), init("R", 1, gates * hidden, hidden), init("B", 1, 2 * gates * hidden),
             init("P", 1, 3 * hidden), init("fc", 3, hidden), init("fcb", 3)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", 2, 4])]
    states = ["", ""]
    if initial_states == "initializers":
        inits += [init("h0", 1, 2, hidden), init("c0", 1, 2, hidden)]
        states = ["h0", "c0"]
    elif initial_states == "input":
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 2, hidden]))
        states = ["h0", ""]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", *states, "P"], ["", "y_h"], hidden_size=hidden,
                              name="lstm"),
             helper.make_node("Squeeze", ["y_h", "axis0"], ["last"]),
             helper.make_node("Gemm", ["last", "fc", "fcb"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("initial_states", ["initializers", "none"])
def test_initial_states_and_peepholes_are_cut_with_the_units(tmp_path, initial_states):
    path = tmp_path / "lstm.onnx"
    onnx.save(_hand_built_lstm(initial_states), str(path))
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((seq, 2, 4)).astype(np.float32)} for seq in (3, 8)]
    result = prune_and_check(path, feeds)
    inits = result.model.graph.initializers
    assert inits["P"].const_value.shape == (1, 9) and inits["R"].const_value.shape == (1, 12, 3)
    if initial_states == "initializers":
        assert inits["h0"].const_value.shape == (1, 2, 3) and inits["c0"].const_value.shape == (1, 2, 3)


def test_an_initial_state_fed_at_run_time_keeps_the_hidden_size(tmp_path):
    path = tmp_path / "lstm.onnx"
    onnx.save(_hand_built_lstm("input"), str(path))
    _, groups = channel_groups(path)
    assert not any(g.prunable and g.size == 6 for g in groups)  # the hidden units: the caller's h0 is [.., 6]


def test_only_zero_initial_states_are_dropped():
    """ConstantOfShape zeros (what the exporters write for a missing h0) become an absent input; any other fill
    stays."""
    def lstm_fed(fill: float):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", 4])
        shape = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "shape")
        weights = [numpy_helper.from_array(np.zeros((1, 4 * 3, n), np.float32), name) for name, n in (("W", 4),
                                                                                                   ("R", 3))]
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                                  value=numpy_helper.from_array(np.array([fill], np.float32))),
                 helper.make_node("LSTM", ["x", "W", "R", "", "", "zeros"], ["y"], hidden_size=3)]
        graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [shape, *weights])
        return load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

    for fill, dropped in ((0.0, True), (0.5, False)):
        model = lstm_fed(fill)
        DropZeroInitialStatesPass()(model)
        lstm = next(node for node in model.graph if node.op_type == "LSTM")
        assert (len(lstm.inputs) < 6 or lstm.inputs[5] is None) == dropped
