"""Balanced blocks: every conv group of a grouped conv keeps the same number of channels.

A grouped conv whose input channels cannot be cut whole conv groups at a time (after a channel shuffle whose
channels straddle the conv groups, or a residual stream that concatenates differently sized parts) reads each
conv group's inputs at their own positions, and its outputs start one group per conv group. Either way the
constraint is the same: the blocks ``[k * width, (k + 1) * width)`` of one tensor axis must keep equally many
elements under every plan. Rules register it (``State.balances``); ``resolve`` settles it after the walk, when
every coupling is known.

Settling: per block, the weight of each root group is the number of the block's elements one of its channels
covers. The blocks keep equal counts under every plan exactly when those weights are equal block by block.
Where they differ, a group one block has more of is coupled (union: channel i with channel i) with a group the
other block has more of, the larger split first so that the sizes match. Each step strictly lowers
sum(|excess| * size), so it ends; unions, splits and freezes never unbalance a settled constraint. Blocks
whose cuttable totals differ cannot be balanced: their channels freeze.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from onnxkd.graph_passes.analyze.layout import Layout, Seg, State, cut

MAX_STEPS = 10_000


@dataclass
class Balance:
    layout: Layout  # a stored layout: splits update it in place
    width: int
    blocks: int
    where: str


def masked(state: State, layout: Layout) -> Layout:
    """``layout`` with frozen groups as untracked elements (they are never cut)."""
    return [s if s.gid is not None and state.find(s.gid) not in state.frozen else Seg(None, s.length) for s in layout]


def block_layouts(state: State, layout: Layout, width: int, blocks: int) -> list[Layout] | None:
    """The cuttable layout of each block, or None when a cuttable channel straddles two blocks."""
    view = masked(state, layout)
    chunks = [cut(view, k * width, (k + 1) * width) for k in range(blocks)]
    return None if any(chunk is None for chunk in chunks) else chunks


def isolate_straddlers(state: State, layout: Layout, width: int, blocks: int, why: str) -> bool:
    """Make every block boundary a segment boundary; a channel across one becomes its own group, frozen.
    False when a boundary falls inside an element (a channel narrower than one element)."""
    for k in range(1, blocks):
        position = k * width
        if state.split_at(layout, position):
            continue
        offset = 0
        for seg in layout:
            if offset < position < offset + seg.length:
                break
            offset += seg.length
        per_channel = state.eff(seg.gid, seg.block)
        if per_channel.denominator != 1:
            return False
        start = offset + (position - offset) // int(per_channel) * int(per_channel)
        state.split_at(layout, start)
        state.split_at(layout, start + int(per_channel))
        state.freeze(_gid_at(layout, position), f"{why}: a channel straddles two conv groups")
    return True


def _gid_at(layout: Layout, position: int) -> int | None:
    offset = 0
    for seg in layout:
        if offset <= position < offset + seg.length:
            return seg.gid
        offset += seg.length
    return None


def resolve(state: State) -> None:
    """Settle every registered constraint (a second pass confirms nothing moved)."""
    for _ in range(len(state.balances) + 2):
        if not any([_settle(state, balance) for balance in state.balances]):
            return


def _weights(state: State, chunk: Layout) -> dict[int, Fraction]:
    weights: dict[int, Fraction] = defaultdict(Fraction)
    for seg in chunk:
        if seg.gid is not None:
            weights[state.find(seg.gid)] += state.eff(seg.gid, seg.block)
    return dict(weights)


def _settle(state: State, balance: Balance) -> bool:
    """Balance one constraint; whether anything changed."""
    for step in range(MAX_STEPS):
        chunks = block_layouts(state, balance.layout, balance.width, balance.blocks)
        if chunks is None:
            state.freeze_layout(balance.layout, f"{balance.where}: a channel straddles two conv groups")
            return True
        weights = [_weights(state, chunk) for chunk in chunks]
        other = next((w for w in weights[1:] if w != weights[0]), None)
        if other is None:
            return step > 0
        excess = {r: weights[0].get(r, 0) - other.get(r, 0) for r in weights[0].keys() | other.keys()}
        if sum(e * state.eff_size(r) for r, e in excess.items()) != 0:
            state.freeze_layout(balance.layout, f"{balance.where}: conv groups hold different numbers of "
                                                "cuttable channels")
            return True
        more = max(excess, key=lambda r: (excess[r], -r))
        less = min(excess, key=lambda r: (excess[r], r))
        size_more, size_less = state.eff_size(more), state.eff_size(less)
        if size_more != size_less:
            state.split_root(more if size_more > size_less else less, min(size_more, size_less))
        state.union(more, less, balance.where)
    state.freeze_layout(balance.layout, f"{balance.where}: conv groups could not be balanced")
    return True
