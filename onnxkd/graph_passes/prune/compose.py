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


def match_groups(teacher: list[ChannelGroup], student: list[ChannelGroup]) -> dict[int, int]:
    """student group id -> teacher group id, for keys that name one group on each side (and no more channels
    in the student than in the teacher)."""
    def unique(groups):
        keys = [group_key(g) for g in groups]
        counts = Counter(keys)
        return {key: g for key, g in zip(keys, groups) if counts[key] == 1}

    in_teacher = unique(teacher)
    return {g.id: in_teacher[key].id for key, g in unique(student).items()
            if key in in_teacher and g.size <= in_teacher[key].size}


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
