"""Profiler events traced back to the nodes the user's graph names (hand-made traces as onnxruntime writes them)."""

from onnx import helper

from onnxkd.quantize.channel_pad import SUFFIX as PADDED
from onnxkd.quantize.profile import OVERHEAD, attribute


def _graph():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Add", ["c2", "r1"], ["a2"], name="add2")]
    return helper.make_graph(nodes, "g", [], [])


def _event(name, dur, ts):
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts}


def test_fused_names_are_traced_back_and_only_the_last_runs_count():
    events = [{"cat": "Session", "name": "model_run", "ts": 0}, _event("conv1_token_3", 999, 1),  # warm-up run
              {"cat": "Session", "name": "model_run", "ts": 10},
              _event("conv1_token_3", 40, 11),  # QLinearConv of a QDQ conv
              _event("r1_nchwc", 30, 12),  # NCHWc conv1 with its Relu fused: named after the Relu's output
              _event("a2_nchwc", 20, 13),  # conv2 with the residual Add fused
              _event("add2", 5, 14), _event("ReorderOutput", 7, 15), _event("x_QuantizeLinear", 3, 16)]
    times = attribute(events, _graph(), runs=1)
    assert times == {"conv1": 70, "conv2": 20, "add2": 5, OVERHEAD: 10}


def test_a_padded_input_counts_to_its_convolution():
    graph = _graph()
    graph.node.insert(0, helper.make_node("Pad", ["xq", "pads"], ["xp"], name=f"conv1{PADDED}"))
    events = [{"cat": "Session", "name": "model_run", "ts": 0},
              _event("conv1_token_3", 40, 1), _event(f"conv1{PADDED}", 6, 2)]
    assert attribute(events, graph, runs=1) == {"conv1": 46}
