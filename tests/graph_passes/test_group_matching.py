"""Pruning in steps matches each student group to its teacher's. A step can rename or fold the tensors between a
group's weights (a dynamo-exported stacked LSTM's second layer lost two member tensors in the first step's
student): such a group is matched by its source node and the weights it slices, and cut again."""

from __future__ import annotations

from onnxkd.graph_passes.analyze.groups import ChannelGroup, InitializerSlice, Member
from onnxkd.graph_passes.prune.compose import match_groups


def _group(gid: int, size: int, source: str, members: list[str], weights: list[str]) -> ChannelGroup:
    return ChannelGroup(gid, size, members=[Member(t, 1, 0, 1) for t in members],
                        slices=[InitializerSlice(w, 0, 0, 1, "out") for w in weights], source=source)


def test_a_group_whose_member_tensors_changed_is_matched_by_its_weights():
    teacher = [_group(0, 64, "lstm1", ["h1"], ["w1", "r1"]),
               _group(1, 64, "lstm2", ["h2", "getitem", "mean"], ["w2", "r2", "fc"])]
    student = [_group(0, 44, "lstm1", ["h1"], ["w1", "r1"]),
               _group(1, 44, "lstm2", ["h2"], ["w2", "r2", "fc"])]  # getitem and mean gone in the student
    assert match_groups(teacher, student) == {0: 0, 1: 1}


def test_groups_that_share_their_weights_key_stay_unmatched():
    """A split group's parts (a chunk) start at one node and slice one weight: which is which is unknown."""
    teacher = [_group(0, 8, "conv", ["a"], ["w"]), _group(1, 8, "conv", ["b"], ["w"])]
    student = [_group(0, 4, "conv", ["a2"], ["w"]), _group(1, 4, "conv", ["b2"], ["w"])]
    assert match_groups(teacher, student) == {}
    bigger = [_group(0, 80, "lstm2", ["h2"], ["w2"])]  # a student never has more channels than its teacher
    assert match_groups([_group(0, 64, "lstm2", ["h2", "x"], ["w2"])], bigger) == {}
