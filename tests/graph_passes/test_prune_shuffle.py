"""Channel shuffle (Reshape [N, g, C/g, H, W] -> Transpose(0, 2, 1, 3, 4) -> Reshape [N, C, H, W]).

The producer's channels are coarsened into the g shuffle groups (whole groups go, g shrinks); after
the shuffle, shuffle group i sits at channels i, i + g, i + 2g, ... (the layout repeated C/g times).
Checked against the zero-at-consumers oracle on random plans.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from prune_oracle import random_inputs, run
from test_dependency_rules import build, check_random_plans, conv, w

from onnxkd.graph_passes.api import prune, prune_with_plan
from onnxkd.model import to_proto


def shuffle(x: str, out: str, n: int, c: int, g: int, hw: int) -> tuple[list, dict]:
    nodes = [helper.make_node("Reshape", [x, f"{out}_s1"], [f"{out}_r"]),
             helper.make_node("Transpose", [f"{out}_r"], [f"{out}_t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", [f"{out}_t", f"{out}_s2"], [out])]
    inits = {f"{out}_s1": np.array([n, g, c // g, hw, hw], np.int64), f"{out}_s2": np.array([n, c, hw, hw], np.int64)}
    return nodes, inits


def test_shuffle_between_convs_is_an_index_mapping():
    nodes, inits = shuffle("a", "sh", 1, 12, 3, 5)
    model = build([conv("x", "a", "w1", "b1"), *nodes, conv("sh", "y", "w2")],
                  {"w1": w(12, 4, 3, 3), "b1": w(12), "w2": w(5, 12, 3, 3), **inits}, [("x", [1, 4, 5, 5])], ["y"])
    groups = check_random_plans(model)
    (group,) = [g for g in groups if g.prunable]
    assert group.size == 3  # the shuffle groups
    consumer = [s for s in group.slices if s.name == "w2"]
    assert [(s.offset, s.block) for s in consumer] == [(3 * r, 1) for r in range(4)]  # channel i at i + 3r
    result = prune(model, 0.5, round_to=1)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    shapes = {v.name: v.const_value.numpy().tolist() for v in result.model.graph.initializers.values()}
    assert shapes["sh_s1"] == [1, 2, 4, 5, 5] and shapes["sh_s2"] == [1, 8, 5, 5]


def test_shuffle_depthwise_and_residual_match_the_oracle():
    """ShuffleNet's order: shuffle -> depthwise conv -> BN -> 1x1 conv, plus a residual onto the shuffle."""
    nodes, inits = shuffle("r", "sh", 1, 8, 2, 4)
    c = 8
    model = build([conv("x", "a", "w1"), helper.make_node("Relu", ["a"], ["r"]), *nodes,
                   conv("sh", "d", "wd", group=c),
                   helper.make_node("BatchNormalization", ["d", "g", "b", "m", "v"], ["n"]),
                   helper.make_node("Add", ["n", "sh"], ["s"]), conv("s", "y", "w2")],
                  {"w1": w(c, 3, 3, 3), "wd": w(c, 1, 3, 3), "g": np.abs(w(c)) + 0.5, "b": w(c), "m": w(c),
                   "v": np.abs(w(c)) + 0.5, "w2": w(4, c, 3, 3), **inits}, [("x", [1, 3, 4, 4])], ["y"])
    groups = check_random_plans(model)
    assert [g.size for g in groups if g.prunable] == [2]


def test_channels_last_flatten_into_a_gemm():
    """NCHW -> NHWC -> [N, H*W*C]: each spatial position repeats the channel layout (Gemm rows i + C*r)."""
    model = build([conv("x", "a", "w1"), helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),
                   helper.make_node("Reshape", ["t", "shape"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"])],
                  {"w1": w(6, 2, 3, 3), "shape": np.array([1, 4 * 4 * 6], np.int64), "fc": w(96, 3)},
                  [("x", [1, 2, 4, 4])], ["y"])
    groups = check_random_plans(model)
    (group,) = [g for g in groups if g.prunable]
    assert group.size == 6 and len([s for s in group.slices if s.name == "fc"]) == 16
    result = prune(model, 0.5, round_to=1)
    feeds = random_inputs(model)
    assert [o.shape for o in run(result.model, feeds)] == [(1, 3)]


def _conv1x1(x, out, weight, bias=None, group=1):
    return helper.make_node("Conv", [x, weight] + ([bias] if bias else []), [out], name=out, group=group)


def test_grouped_conv_after_uncuttable_channels_still_cuts_its_outputs():
    """A grouped conv reading channels that cannot be cut (a graph input) is itself a producer: the same output
    positions go in every conv group, so `group` stays."""
    model = build([_conv1x1("x", "a", "w1", "b1", group=3), helper.make_node("Relu", ["a"], ["r"]),
                   _conv1x1("r", "y", "w2")],
                  {"w1": w(12, 2, 1, 1), "b1": w(12), "w2": w(5, 12, 1, 1)}, [("x", [1, 6, 4, 4])], ["y"])
    groups = check_random_plans(model)
    (group,) = [g for g in groups if g.prunable]
    assert group.size == 4  # positions within each of the 3 conv groups
    assert sorted(s.offset for s in group.slices if s.name == "w1") == [0, 4, 8]
    result = prune(model, 0.5, round_to=1)
    shapes = {n: v.const_value.shape for n, v in result.model.graph.initializers.items()}
    assert tuple(shapes["w1"]) == (6, 2, 1, 1) and tuple(shapes["w2"]) == (5, 6, 1, 1)


def test_shufflenet_unit_grouped_convs_around_the_shuffle():
    """ShuffleNet v1: grouped 1x1 conv -> shuffle -> depthwise 3x3 -> grouped 1x1 conv, 4 conv groups of 10. After
    the shuffle channel j covers positions 4j..4j+3, so channels 2 and 7 straddle the second conv's groups (at 10
    and 30): they stay, and the rest is cut with every conv group keeping as many as the others. Conv group k of
    the second conv reads its channels at its own positions (offset 2 in groups 1 and 3): its weight rows get
    their own columns."""
    g, c = 4, 40
    nodes, inits = shuffle("r", "sh", 1, c, g, 4)
    model = build([_conv1x1("x", "a", "w1", group=g), helper.make_node("Relu", ["a"], ["r"]), *nodes,
                   conv("sh", "d", "wd", group=c), _conv1x1("d", "e", "w2", group=g),
                   helper.make_node("Relu", ["e"], ["f"]), _conv1x1("f", "y", "w3")],
                  {"w1": w(c, 2, 1, 1), "wd": w(c, 1, 3, 3), "w2": w(c, c // g, 1, 1), "w3": w(5, c, 1, 1), **inits},
                  [("x", [1, 8, 4, 4])], ["y"])
    groups = check_random_plans(model, seeds=range(6))
    shuffled = next(g for g in groups if any(s.name == "wd" for s in g.slices) and g.prunable)
    assert shuffled.size == 2  # channels {0, 3, 5, 8} and {1, 4, 6, 9} of each w1 conv group: 2 per w2 conv group
    columns = sorted((s.rows, s.offset) for s in shuffled.slices if s.name == "w2")
    assert columns == [((0, 10), 0), ((10, 20), 2), ((20, 30), 0), ((30, 40), 2)]
    assert sum("straddles two conv groups" in (grp.frozen or "") for grp in groups) == 2
    result = prune(model, 0.5, round_to=1)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    shapes = {v.name: list(v.const_value.shape) for v in result.model.graph.initializers.values()}
    assert shapes["w1"] == [24, 2, 1, 1] and shapes["w2"] == [20, 6, 1, 1]  # (10 - 4) per group in, 5 out
    assert {n.attributes["group"].value for n in result.model.graph if n.name in ("a", "e")} == {4}
    assert run(result.model, random_inputs(model))[0].shape == (1, 5, 4, 4)


def test_residual_stream_of_unequal_parts_balances_the_conv_groups_reading_it():
    """ShuffleNet v1's stage start: a grouped conv's 4 x 6 outputs concatenated with 8 pooled channels, read by a
    grouped conv in 4 blocks of 8 that do not line up with the parts. Each block keeps as many as the others."""
    model = build([_conv1x1("x", "a", "w1", group=4), helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[1, 1]),
                   _conv1x1("p", "q", "w0"), helper.make_node("Concat", ["a", "q"], ["s"], axis=1),
                   helper.make_node("Relu", ["s"], ["r"]), _conv1x1("r", "e", "w2", group=4), _conv1x1("e", "y", "w3")],
                  {"w0": w(8, 8, 1, 1), "w1": w(24, 2, 1, 1), "w2": w(12, 8, 1, 1), "w3": w(5, 12, 1, 1)},
                  [("x", [1, 8, 4, 4])], ["y"])
    groups = check_random_plans(model, seeds=range(8))
    (stream,) = [g for g in groups if any(s.name in ("w0", "w1") for s in g.slices)]
    assert stream.prunable and {s.rows for s in stream.slices if s.name == "w2"} == {(0, 3), (3, 6), (6, 9), (9, 12)}
    result = prune(model, 0.5, round_to=1)
    node = next(n for n in result.model.graph if n.name == "e")
    assert node.attributes["group"].value == 4
    assert run(result.model, random_inputs(model))[0].shape == (1, 5, 4, 4)


def test_concat_of_two_convs_then_shuffle_couples_the_halves_position_by_position():
    """ShuffleNet v2: concat(branch1, branch2) -> shuffle (g=2). Channel i of each branch land side by side, so
    they are cut together and both halves shrink alike (g stays 2), instead of the whole-half cut (g shrinks)
    that would leave nothing to prune."""
    nodes, inits = shuffle("c", "sh", 1, 12, 2, 4)
    model = build([conv("x", "a", "wa"), conv("x", "b", "wb"), helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
                   *nodes, conv("sh", "y", "w2")],
                  {"wa": w(6, 3, 3, 3), "wb": w(6, 3, 3, 3), "w2": w(5, 12, 3, 3), **inits}, [("x", [1, 3, 4, 4])], ["y"])
    groups = check_random_plans(model, seeds=range(5))
    (group,) = [g for g in groups if g.prunable]
    assert group.size == 6 and {"wa", "wb", "w2"} <= {s.name for s in group.slices}
    assert [(s.offset, s.block) for s in group.slices if s.name == "w2"] == [(0, 2)]  # channel i at 2i, 2i + 1
    result = prune(model, 0.5, round_to=1)
    shapes = {v.name: v.const_value.numpy().tolist() for v in result.model.graph.initializers.values()}
    assert shapes["sh_s1"] == [1, 2, 3, 4, 4] and shapes["sh_s2"] == [1, 6, 4, 4]


def _chunk_end(x: str, axis: int, name: str) -> tuple[list, dict]:
    """(Shape(x)[axis] + 1) / 2, as the legacy exporter writes the split point of ``x.chunk(2, dim=axis)``."""
    nodes = [helper.make_node("Shape", [x], [f"{name}_shape"]),
             helper.make_node("Gather", [f"{name}_shape", f"{name}_axis"], [f"{name}_dim"], axis=0),
             helper.make_node("Add", [f"{name}_dim", f"{name}_one"], [f"{name}_plus"]),
             helper.make_node("Div", [f"{name}_plus", f"{name}_two"], [name])]
    return nodes, {f"{name}_axis": np.array([axis], np.int64), f"{name}_one": np.array([1], np.int64),
                   f"{name}_two": np.array([2], np.int64)}


def test_chunk_with_computed_split_point_cuts_each_half_on_its_own():
    """The legacy export's chunk: Slices whose bounds are computed from the width at run time. They become
    constants (the width is static), so the halves are two groups with their own cuts. Bounds computed from
    the dynamic batch size stay computed, whether read off the sliced tensor or another one."""
    end_nodes, end_inits = _chunk_end("a", 1, "mid")
    batch_nodes, batch_inits = _chunk_end("y2", 0, "half_batch")
    other_nodes, other_inits = _chunk_end("a", 0, "other_half")
    big = np.array([2**62], np.int64)
    model = build([conv("x", "a", "w1"), *end_nodes, *other_nodes,
                   helper.make_node("Slice", ["a", "zero", "mid", "axis1"], ["lo"], name="lo"),
                   helper.make_node("Slice", ["a", "mid", "big", "axis1"], ["hi"], name="hi"),
                   conv("lo", "y1", "w2"), conv("hi", "y2", "w3"), *batch_nodes,
                   helper.make_node("Slice", ["y2", "zero", "half_batch", "axis0"], ["y3"], name="by_batch"),
                   helper.make_node("Slice", ["y2", "zero", "other_half", "axis0"], ["y4"], name="by_other")],
                  {"w1": w(8, 3, 3, 3), "w2": w(4, 4, 3, 3), "w3": w(4, 4, 3, 3), "zero": np.array([0], np.int64),
                   "big": big, "axis1": np.array([1], np.int64), "axis0": np.array([0], np.int64),
                   **end_inits, **batch_inits, **other_inits},
                  [("x", ["N", 3, 4, 4])], ["y1", "y3", "y4"])
    groups = check_random_plans(model, seeds=range(5))
    assert sorted(g.size for g in groups if g.prunable) == [4, 4]
    low = next(g for g in groups if any(s.name == "w2" for s in g.slices))
    high = next(g for g in groups if any(s.name == "w3" for s in g.slices))
    result = prune_with_plan(model, {low.id: [0], high.id: [1, 2, 3]})
    nodes = {n.name: n for n in result.model.graph}
    assert nodes["lo"].inputs[2].const_value.numpy().tolist() == [1]  # 1 + 3 channels kept: unequal halves
    assert nodes["by_batch"].inputs[2].const_value is None  # depends on the batch size: still computed
    assert nodes["by_other"].inputs[2].const_value is None
    feeds = random_inputs(model, batch=3)
    assert [o.shape for o in run(result.model, feeds)] == [(3, 4, 4, 4), (2, 4, 4, 4), (2, 4, 4, 4)]  # (3+1)/2 rows
