"""Importance criteria and plans, against hand-computed expectations on a small hand-made group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.groups import ChannelGroup, Edit, InitializerSlice, Member
from onnxkd.graph_passes.prune.importance import importance
from onnxkd.graph_passes.prune.plan import make_plan, plan_from_json, plan_to_json


def group(gid=0, size=4, block=1, source="conv", bn=False):
    slices = [InitializerSlice("w", 0, 0, block, "out"), InitializerSlice("next", 1, 0, block, "in")]
    if bn:
        slices.append(InitializerSlice("gamma", 0, 0, block, "bn_scale"))
    return ChannelGroup(id=gid, size=size, slices=slices, source=source, members=[Member("t", 1, 0, block)])


ARRAYS = {
    "w": np.array([[1.0, -1.0], [0.0, 0.5], [3.0, 0.0], [-2.0, 2.0]], np.float32),  # |.|: 2, .5, 3, 4
    "next": np.array([[1.0, 0.0, 0.0, 0.0]], np.float32),  # adds 1 to channel 0
    "gamma": np.array([0.1, 0.9, -0.5, 0.2], np.float32),
}


def test_l1_l2_bn_scores_by_hand():
    g = group(bn=True)
    l1 = importance([g], ARRAYS, "l1")[0]
    np.testing.assert_allclose(l1, [2 + 1 + 0.1, 0.5 + 0.9, 3 + 0.5, 4 + 0.2], rtol=1e-6)
    l2 = importance([g], ARRAYS, "l2")[0]
    np.testing.assert_allclose(l2, np.sqrt([2 + 1 + 0.01, 0.25 + 0.81, 9 + 0.25, 8 + 0.04]), rtol=1e-6)
    np.testing.assert_allclose(importance([g], ARRAYS, "bn")[0], [0.1, 0.9, 0.5, 0.2], rtol=1e-6)


def test_taylor_needs_gradients_and_uses_them():
    g = group()
    with pytest.raises(OnnxkdError, match="gradients"):
        importance([g], ARRAYS, "taylor")
    grads = {"w": np.ones_like(ARRAYS["w"]), "next": np.zeros_like(ARRAYS["next"])}
    np.testing.assert_allclose(importance([g], ARRAYS, "taylor", gradients=grads)[0], [0, 0.5, 3, 0])


def test_uniform_plan_keeps_highest_scores():
    scores = {0: np.array([3.0, 1.0, 4.0, 2.0])}
    assert make_plan([group()], scores, 0.5, round_to=1) == {0: [0, 2]}
    assert make_plan([group()], scores, 0.0) == {0: [0, 1, 2, 3]}
    assert make_plan([group()], scores, 0.99, round_to=1) == {0: [2]}  # never empty


def test_round_to_and_blocks():
    scores = {0: np.arange(10.0)}
    assert len(make_plan([group(size=10)], scores, 0.5, round_to=4)[0]) == 4  # 5 -> 4, the nearest multiple
    assert len(make_plan([group(size=10)], scores, 0.3, round_to=4)[0]) == 8  # 7 -> 8
    heads = group(size=4, block=8)  # heads of 8: any head count is a multiple of 8 channels
    assert len(make_plan([heads], {0: np.arange(4.0)}, 0.5, round_to=8)[0]) == 2
    # a grouped conv of 4 conv groups, balanced: channel i is one row in each conv group (4 output rows)
    balanced = ChannelGroup(id=0, size=6, source="conv", slices=[InitializerSlice("w", 0, 6 * k, 1, "out")
                                                                  for k in range(4)])
    assert balanced.outputs_per_channel == 4 and balanced.channel_block == 1
    assert len(make_plan([balanced], {0: np.arange(6.0)}, 0.5, round_to=8)[0]) == 4  # 3 -> 4: 16 rows, not 12


@pytest.mark.parametrize("size, ratio, kept", [
    (64, 0.5, 32), (40, 0.5, 16), (56, 0.5, 32), (24, 0.5, 16),  # 20 -> 16, 28 -> 32, 12 -> 16 (halves up)
    (16, 0.5, 16), (16, 0.9, 16), (12, 0.5, 12),  # never below one block: narrow groups stay whole
    (160, 0.3, 112), (100, 0.5, 48),  # 112 is a multiple of 16; 50 -> 48
])
def test_default_rounds_kept_counts_to_the_nearest_multiple_of_16(size, ratio, kept):
    assert len(make_plan([group(size=size)], {0: np.arange(float(size))}, ratio)[0]) == kept


def test_rounding_to_the_nearest_block_never_cuts_past_the_global_group_limit():
    # ratio 0.3 of 80 channels: 24 go; group 0 (tiny scores) may lose only half (20): 20 kept is the limit,
    # and the nearest multiple of 16 (16) would cut past it, so it rounds up to 32
    groups = [group(0, size=40), group(1, size=40)]
    scores = {0: np.full(40, 0.01) + np.arange(40) * 1e-4, 1: np.full(40, 10.0) + np.arange(40) * 1e-3}
    exact = make_plan(groups, scores, 0.3, global_rank=True, max_group_ratio=0.5, round_to=1)
    assert (len(exact[0]), len(exact[1])) == (20, 36)
    rounded = make_plan(groups, scores, 0.3, global_rank=True, max_group_ratio=0.5, round_to=16)
    assert (len(rounded[0]), len(rounded[1])) == (32, 32)


def test_global_removes_same_fraction_where_scores_are_lowest():
    groups = [group(0, 4), group(1, 4, source="other")]
    scores = {0: np.array([1.0, 1.0, 1.0, 1.0]), 1: np.array([0.1, 1.9, 0.1, 1.9])}
    plan = make_plan(groups, scores, 0.5, global_rank=True, round_to=1)
    assert sum(len(v) for v in plan.values()) == 4
    assert plan[1] == [1, 3]  # the two low-normalised channels of group 1 go first
    capped = make_plan(groups, {0: np.ones(4), 1: np.array([0.01, 0.01, 0.01, 10])}, 0.5, global_rank=True, round_to=1)
    assert all(len(v) >= 1 for v in capped.values())


def test_ignore_and_recipe_overrides():
    groups = [group(0, 4, source="stem/conv"), group(1, 4, source="head/fc")]
    scores = {0: np.arange(4.0), 1: np.arange(4.0)}
    plan = make_plan(groups, scores, 0.5, ignore="^head", round_to=1)
    assert plan == {0: [2, 3], 1: [0, 1, 2, 3]}
    plan = make_plan(groups, scores, 0.5, recipe={"overrides": {"stem": 0.25}}, round_to=1)
    assert plan == {0: [1, 2, 3], 1: [2, 3]}
    with pytest.raises(OnnxkdError, match="regular expression"):
        make_plan(groups, scores, 0.5, ignore="(")
    with pytest.raises(OnnxkdError):
        make_plan(groups, scores, 1.0)


def test_recipe_group_ratios_override_by_group_id_over_everything_else():
    """What --target-speedup's per-group search writes: group id -> ratio, JSON keys as strings."""
    groups = [group(0, 4, source="stem/conv"), group(1, 4, source="head/fc"), group(2, 4, source="mid")]
    scores = {gid: np.arange(4.0) for gid in range(3)}
    recipe = {"overrides": {"stem": 0.25}, "group_ratios": {"0": 0.0, "1": 0.75}}
    plan = make_plan(groups, scores, 0.5, ignore="^head", recipe=recipe, round_to=1)
    assert plan == {0: [0, 1, 2, 3], 1: [3], 2: [2, 3]}
    for bad in ({"0": 1.0}, {"x": 0.5}, {"0": "half"}):
        with pytest.raises(OnnxkdError, match="group_ratios"):
            make_plan(groups, scores, 0.5, recipe={"group_ratios": bad}, round_to=1)


def test_plan_json_round_trip():
    g = group()
    g.edits.append(Edit("tensor", "shape", 2, 8))
    text = plan_to_json({0: [1, 3]}, [g])
    assert plan_from_json(text) == {0: [1, 3]}
    assert json.loads(text)["groups"][0]["members"] == [["t", 1, 0, 1]]
    assert ChannelGroup.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_global_ranking_caps_every_group_at_max_group_ratio():
    """--global removes the lowest-scored channels anywhere, but never more than the cap of one group."""
    from onnxkd.errors import OnnxkdError

    groups = [ChannelGroup(id=i, size=10) for i in range(3)]
    # scores are compared after dividing by each group's mean: group 0's nine zeros are the lowest of all
    scores = {0: np.array([0.0] * 9 + [1.0]), 1: np.ones(10), 2: np.ones(10)}
    for cap, kept_in_0 in ((0.9, 1), (0.5, 5), (0.3, 7)):
        plan = make_plan(groups, scores, 0.3, global_rank=True, max_group_ratio=cap, round_to=1)
        assert len(plan[0]) == kept_in_0
        assert sum(len(k) for k in plan.values()) == 30 - 9  # the same overall fraction, taken elsewhere
    with pytest.raises(OnnxkdError, match="--max-group-ratio"):
        make_plan(groups, scores, 0.3, global_rank=True, max_group_ratio=1.0, round_to=1)
