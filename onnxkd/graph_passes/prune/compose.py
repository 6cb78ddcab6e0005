"""Pruning in several steps: the groups of a pruned student matched to its teacher's, and the plans composed.

A student pruned again is analysed afresh: its groups mostly have the same structure as the teacher's (the
same source nodes and member tensors; pruning keeps every name) but fewer channels. Not always: where groups
come from splitting one (a chunk, the balanced conv groups of a ShuffleNet, whose straddling channels move when
the width changes), several groups share a key, and such groups are not matched (not cut again). A step's plan keeps
indices *of the student*; composed with the plan that made the student, it keeps indices *of the
teacher*, which is what the final student must store so that hints still line up with the teacher.
"""

from __future__ import annotations

import math
from collections import Counter

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.groups import ChannelGroup
from onnxkd.graph_passes.prune.plan import Plan


def group_key(group: ChannelGroup) -> tuple:
    """What identifies a group across pruning steps: where it starts and which (tensor, axis) it cuts."""
    return group.source, tuple(sorted({(m.tensor, m.axis) for m in group.members}))


def weights_key(group: ChannelGroup) -> tuple:
    """A looser identity: where the group starts and which weights it slices. A step can rename or fold the
    tensors between them: a dynamo-exported stacked LSTM's second layer lost two of its member tensors in the
    first step's student, went unmatched, and was not cut again (48 of 64 hidden units kept, not 32)."""
    return group.source, tuple(sorted({s.name for s in group.slices}))


def match_groups(teacher: list[ChannelGroup], student: list[ChannelGroup]) -> dict[int, int]:
    """student group id -> teacher group id, for keys that name one group on each side (and no more channels
    in the student than in the teacher): by ``group_key``, then the rest by ``weights_key``."""
    def unique(groups, key_of):
        keys = [key_of(g) for g in groups]
        counts = Counter(keys)
        return {key: g for key, g in zip(keys, groups) if counts[key] == 1}

    matched: dict[int, int] = {}
    for key_of in (group_key, weights_key):
        in_teacher = unique([g for g in teacher if g.id not in matched.values()], key_of)
        for key, g in unique([g for g in student if g.id not in matched], key_of).items():
            if key in in_teacher and g.size <= in_teacher[key].size:
                matched[g.id] = in_teacher[key].id
    return matched


def compose(previous: Plan, step: Plan, student_to_teacher: dict[int, int], teacher_sizes: dict[int, int]) -> Plan:
    """Teacher indices kept after ``step`` (student indices) is applied to the student ``previous`` made."""
    composed = {gid: list(kept) for gid, kept in previous.items()}
    for student_gid, kept in step.items():
        teacher_gid = student_to_teacher.get(student_gid)
        if teacher_gid is None:
            raise OnnxkdError(f"pruning step: student group {student_gid} has no counterpart in the teacher")
        before = previous.get(teacher_gid, list(range(teacher_sizes[teacher_gid])))
        composed[teacher_gid] = [before[i] for i in kept]
    return composed


def step_counts(final: dict[int, int], sizes: dict[int, int], step: int, steps: int) -> dict[int, int]:
    """Channels each group keeps after ``step`` of ``steps`` (1-based): from the teacher's size down to the
    final count in equal parts, the last step exactly at ``final``."""
    return {gid: sizes[gid] - math.floor((sizes[gid] - count) * step / steps) for gid, count in final.items()}
