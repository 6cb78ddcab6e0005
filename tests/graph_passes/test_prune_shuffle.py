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

from onnxkd.graph_passes.api import prune
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
    result = prune(model, 0.5)
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
    result = prune(model, 0.5)
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
    result = prune(model, 0.5)
    shapes = {n: v.const_value.shape for n, v in result.model.graph.initializers.items()}
    assert tuple(shapes["w1"]) == (6, 2, 1, 1) and tuple(shapes["w2"]) == (5, 6, 1, 1)


def test_shufflenet_unit_grouped_convs_around_the_shuffle():
    """ShuffleNet v1: grouped 1x1 conv -> shuffle -> depthwise 3x3 -> grouped 1x1 conv. Channels after the
    shuffle straddle the second conv's groups: the same positions are cut in all of them (here 6 positions per
    conv group, a multiple of the 3 groups, so a shuffled channel's elements can stay together)."""
    g, c = 3, 18
    nodes, inits = shuffle("r", "sh", 1, c, g, 4)
    model = build([_conv1x1("x", "a", "w1", group=g), helper.make_node("Relu", ["a"], ["r"]), *nodes,
                   conv("sh", "d", "wd", group=c), _conv1x1("d", "e", "w2", group=g),
                   helper.make_node("Relu", ["e"], ["f"]), _conv1x1("f", "y", "w3")],
                  {"w1": w(c, 2, 1, 1), "wd": w(c, 1, 3, 3), "w2": w(c, c // g, 1, 1), "w3": w(5, c, 1, 1), **inits},
                  [("x", [1, 6, 4, 4])], ["y"])
    groups = check_random_plans(model, seeds=range(6))
    (group,) = [g for g in groups if g.prunable]
    assert {"w1", "w2", "wd", "w3"} <= {s.name for s in group.slices}
    assert sorted(s.offset for s in group.slices if s.name == "w1") == [0, 6, 12]  # the same positions per group
    result = prune(model, 0.5)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    assert run(result.model, random_inputs(model))[0].shape == (1, 5, 4, 4)
