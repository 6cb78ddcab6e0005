"""The prune plan: kept channel indices per group, from scores, a ratio and the user's constraints.

``--ratio R`` removes floor(R * size) channels from every prunable group (uniform); ``global_rank``
removes the same overall fraction where scores (normalised per group) are lowest, never more than
``max_group_ratio`` of one group. ``round_to`` rounds channel counts to the nearest multiple of N
(default ``DEFAULT_ROUND_TO``); ``ignore`` (regex
on node and initializer names) and a recipe's per-node ratios override. A recipe's ``group_ratios``
(group id -> ratio, ids of this teacher's analysis, as ``--target-speedup``'s per-group search writes
them) override last.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from math import gcd

import numpy as np

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.groups import ChannelGroup

Plan = dict[int, list[int]]

# onnxruntime's CPU convolutions work on blocks of 16 channels with AVX-512 (8 with AVX2; GPUs' tensor cores
# on 8): a layer cut off the block runs on a slower path, so the channels cut past the block cost accuracy for
# little speed. benchmarks/speed_efficiency.py measured it (README, "Why --round-to defaults to 16").
DEFAULT_ROUND_TO = 16


def group_names(group: ChannelGroup) -> list[str]:
    return [group.source] + sorted({s.name for s in group.slices})


def _matches(pattern: re.Pattern, group: ChannelGroup) -> bool:
    return any(pattern.search(name) for name in group_names(group))


def _compile(text: str, what: str) -> re.Pattern:
    if not isinstance(text, str):  # ignore=["conv1"] from Python: one pattern, as --ignore takes it
        raise OnnxkdError(f"{what} {text!r}: expected one regular expression (a string; 'conv1|fc' for several)")
    try:
        return re.compile(text)
    except re.error as exc:
        raise OnnxkdError(f"{what} {text!r}: not a valid regular expression ({exc})") from None


def group_ratios(groups: list[ChannelGroup], ratio: float, ignore: str | None, recipe: dict | None) -> dict[int, float]:
    """The ratio each prunable group gets (0 = left whole)."""
    ignored = _compile(ignore, "--ignore") if ignore else None
    overrides = [(_compile(k, "recipe override"), float(v)) for k, v in ((recipe or {}).get("overrides") or {}).items()]
    for _, value in overrides:
        if not 0 <= value < 1:
            raise OnnxkdError(f"recipe override ratio {value} outside [0, 1)")
    by_id = group_overrides(recipe)
    ratios = {}
    for group in groups:
        if not group.prunable:
            continue
        if group.id in by_id:
            ratios[group.id] = by_id[group.id]
        elif ignored is not None and _matches(ignored, group):
            ratios[group.id] = 0.0
        else:
            ratios[group.id] = next((v for p, v in overrides if _matches(p, group)), ratio)
    return ratios


def group_overrides(recipe: dict | None) -> dict[int, float]:
    """The recipe's ``group_ratios`` with int ids (JSON keys are strings)."""
    result = {}
    for key, value in ((recipe or {}).get("group_ratios") or {}).items():
        try:
            gid, value = int(key), float(value)
        except (TypeError, ValueError):
            raise OnnxkdError(f"recipe group_ratios {key!r}: {value!r}: expected a group id and a ratio") from None
        if not 0 <= value < 1:
            raise OnnxkdError(f"recipe group_ratios {key!r}: ratio {value} outside [0, 1)")
        result[gid] = value
    return result


def _round(kept: int, group: ChannelGroup, round_to: int, least: int = 1) -> int:
    """``kept`` to the nearest multiple of the group's step (halves up), at least one step and ``least``.

    Nearest, not up: over many groups about the asked fraction of channels goes, in whole blocks.
    """
    step = max(1, round_to // gcd(round_to, group.outputs_per_channel)) if round_to > 1 else 1
    step = max(step, group.divisor)
    rounded = math.floor(kept / step + 0.5) * step
    if rounded < least:
        rounded = math.ceil(least / step) * step
    return min(max(step, rounded), group.size)


def make_plan(groups: list[ChannelGroup], scores: dict[int, np.ndarray], ratio: float, *, global_rank: bool = False,
              round_to: int | None = None, ignore: str | None = None, recipe: dict | None = None,
              max_group_ratio: float = 0.9) -> Plan:
    """Kept indices (sorted) of every prunable group; ``round_to`` None: ``DEFAULT_ROUND_TO``."""
    round_to = DEFAULT_ROUND_TO if round_to is None else round_to
    if not 0 <= ratio < 1:
        raise OnnxkdError(f"--ratio {ratio}: must be in [0, 1)")
    if round_to < 1:
        raise OnnxkdError(f"--round-to {round_to}: must be >= 1")
    if not 0 < max_group_ratio < 1:
        raise OnnxkdError(f"--max-group-ratio {max_group_ratio}: must be in (0, 1)")
    ratios = group_ratios(groups, ratio, ignore, recipe)
    by_id = {g.id: g for g in groups}
    counts = {gid: g_size - math.floor(r * g_size + 1e-9) for gid, r in ratios.items()
              for g_size in [by_id[gid].size]}
    least = {}  # rounding to the nearest block must not cut past the per-group limit of global ranking
    if global_rank:
        cap = max(ratio, max_group_ratio)
        counts = _global_counts(by_id, scores, ratios, cap)
        least = {gid: by_id[gid].size - math.floor(cap * by_id[gid].size) for gid in counts}
    plan = {}
    for gid, kept in counts.items():
        group = by_id[gid]
        kept = _round(max(kept, 1), group, round_to, least.get(gid, 1)) if ratios[gid] > 0 else group.size
        order = np.argsort(-scores[gid], kind="stable")[:kept]
        plan[gid] = sorted(int(i) for i in order)
    return plan


def whole_by_rounding(groups: list[ChannelGroup], plan: Plan, exact: Plan) -> list[int]:
    """Groups the same plan at round-to 1 (``exact``) cuts that rounding left whole (narrower than about two
    blocks), so a user who asked for a ratio hears why those layers kept their width."""
    return [g.id for g in groups if g.id in plan and len(plan[g.id]) == g.size and len(exact.get(g.id, ())) < g.size]


def rounding_note(summary: dict) -> str | None:
    """One line for a prune summary whose rounding left groups whole (prune and compress print it)."""
    whole = summary.get("whole_by_rounding") or []
    if not whole:
        return None
    n, step = len(whole), summary.get("round_to", DEFAULT_ROUND_TO)
    return (f"round-to {step} left {n} narrow {'group' if n == 1 else 'groups'} whole that the ratio would cut "
            f"(a CPU layer cut below {step} channels gains far less speed than MACs); --round-to 1 cuts them")


def nothing_cut(summary: dict, frozen: list[str]) -> str | None:
    """Why a prune cut no channel group, in a phrase (None where it cut one): groups too narrow for its
    round-to, or the reasons of the ``frozen`` groups (the three most common). prune and compress say it."""
    if summary["pruned"]:
        return None
    groups = summary["groups"]
    if rounded := summary.get("whole_by_rounding"):
        return (f"{len(rounded)} of its {groups} channel groups are too narrow to cut at round-to "
                f"{summary['round_to']} and the rest are frozen; --round-to 1 cuts narrow groups")
    reasons = Counter(frozen).most_common(3)
    listed = "; ".join(f"{reason}{f' ({n} groups)' if n > 1 else ''}" for reason, n in reasons) \
        or "single-channel groups"
    return (f"its only channel group is frozen ({listed})" if groups == 1
            else f"all {groups} of its channel groups are frozen ({listed})")


def _global_counts(by_id, scores, ratios, cap: float) -> dict[int, int]:
    """Remove the lowest normalised scores over all groups, for the same total fraction of channels."""
    budget = sum(math.floor(r * by_id[gid].size + 1e-9) for gid, r in ratios.items())
    candidates = []
    limits = {}
    for gid, r in ratios.items():
        size = by_id[gid].size
        limits[gid] = min(size - 1, math.floor(cap * size)) if r > 0 else 0
        s = scores[gid]
        normalised = s / (s.mean() + 1e-12)
        candidates.extend((float(v), gid) for v in np.sort(normalised)[: limits[gid]])
    candidates.sort(key=lambda item: item[0])
    removed = {gid: 0 for gid in ratios}
    for _, gid in candidates:
        if budget <= 0:
            break
        if removed[gid] < limits[gid]:
            removed[gid] += 1
            budget -= 1
    return {gid: by_id[gid].size - removed[gid] for gid in ratios}


def plan_to_json(plan: Plan, groups: list[ChannelGroup]) -> str:
    """The plan as saved with the student: kept teacher indices and the tensors they index."""
    by_id = {g.id: g for g in groups}
    entries = []
    for gid, kept in sorted(plan.items()):
        group = by_id[gid]
        if len(kept) == group.size:
            continue
        entries.append({"group": gid, "size": group.size, "kept": kept, "source": group.source,
                        "members": [[m.tensor, m.axis, m.offset, m.block] for m in group.members]})
        if group.normalized:  # a LayerNorm'd width: student channels are not the teacher's zeroed ones
            entries[-1]["normalized"] = True
    return json.dumps({"version": 1, "groups": entries}, separators=(",", ":"))


def plan_from_json(text: str) -> Plan:
    data = json.loads(text)
    return {int(e["group"]): list(e["kept"]) for e in data.get("groups", [])}
