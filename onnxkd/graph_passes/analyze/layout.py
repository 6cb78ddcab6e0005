"""The analysis state: per-tensor channel layouts over union-find groups.

A layout of one tensor axis is a list of segments. A segment of ``length`` elements either carries
group ``gid`` (``block`` elements per original channel of that gid, a Fraction) or is untracked
(``gid`` None: those channels can never be cut). A group may be coarsened (heads, conv groups):
``unit[g]`` original channels then form one channel; lengths never change, so layouts stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from onnxkd.graph_passes.analyze.groups import ChannelGroup, Edit, InitializerSlice, Member


@dataclass(frozen=True)
class Seg:
    gid: int | None
    length: int
    block: Fraction = Fraction(1)


Layout = list  # list[Seg]


class State:
    def __init__(self, prune_normalized: bool = False):
        self.prune_normalized = prune_normalized  # opt-in: LayerNorm'd hidden sizes (and embedding tables) are cut
        self.normalized: set[int] = set()  # gids whose channels a LayerNormalization normalises over
        self.followed_sizes: set[tuple[str, int]] = set()  # (tensor, axis) sizes a rule relies on following the cut
        self.size: list[int] = []  # original channels per gid
        self.unit: list[int] = []
        self.parent: list[int] = []
        self.sets: dict[int, list[int]] = {}
        self.frozen: dict[int, str] = {}
        self.source: list[str] = []
        self.slices: list[tuple[int, str, int, int, Fraction, str, tuple | None]] = []  # ..., role, rows
        self.edits: list[tuple[int, Edit, Fraction]] = []
        self.members: list[tuple[int, str, int, int, Fraction]] = []
        self.layouts: dict[str, dict[int, Layout]] = {}
        self.concrete: dict[str, list[int]] = {}  # shapes with dynamic input dims at stand-in values
        self.concrete_values: dict = {}  # small int tensors folded from shape arithmetic, same stand-ins
        self.dynamic_axes: dict[str, set[int] | None] = {}  # tensor -> axes of dynamic extent (None: all)
        self.balances: list = []  # balance.Balance constraints, settled after the walk
        self.spans: dict[tuple[str, int], int] = {}  # (initializer, axis) -> InitializerSlice.span where not 1
        self.adopted: dict[tuple[str, int], Layout] = {}  # (weight, axis) -> the layout it follows (weight_paths)
        self.adopters: dict[tuple[str, int], set[str]] = {}  # ... -> the nodes that adopted it
        self.shared_readers: dict[tuple[str, int], set[str]] = {}  # ... -> the nodes that must adopt it

    # ------------------------------------------------------------------ groups
    def new_group(self, size: int, source: str) -> int:
        gid = len(self.size)
        self.size.append(size)
        self.unit.append(1)
        self.parent.append(gid)
        self.sets[gid] = [gid]
        self.source.append(source)
        return gid

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def eff_size(self, g: int) -> int:
        return self.size[g] // self.unit[g]

    def eff(self, g: int, value: Fraction) -> Fraction:
        """An orig-channel quantity (block, mult) of gid g, per channel of its coarsened group."""
        return value * self.unit[g]

    def coarsen(self, g: int, factor: int, why: str) -> bool:
        root = self.find(g)
        if factor == 1:
            return True
        if self.eff_size(root) % factor:
            self.freeze(root, f"{why}: {self.eff_size(root)} channels not divisible into blocks of {factor}")
            return False
        for member in self.sets[root]:
            self.unit[member] *= factor
        return True

    def freeze(self, g: int | None, reason: str) -> None:
        if g is None:
            return
        self.frozen.setdefault(self.find(g), reason)

    def union(self, a: int, b: int, where: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        sa, sb = self.eff_size(ra), self.eff_size(rb)
        if sa != sb:
            big, small = (ra, sa // sb) if sa > sb else (rb, sb // sa)
            if max(sa, sb) % min(sa, sb) or not self.coarsen(big, small, where):
                reason = f"{where}: couples {sa} with {sb} channels"
                self.freeze(ra, reason)
                self.freeze(rb, reason)
                return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.sets[ra].extend(self.sets.pop(rb))
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))
        return True

    # ------------------------------------------------------------------ records
    def add_slice(self, gid: int, name: str, axis: int, offset: int, block: Fraction, role: str,
                  rows: tuple[int, int] | None = None) -> None:
        self.slices.append((gid, name, axis, offset, Fraction(block), role, rows))

    def add_edit(self, gid: int, edit: Edit, mult: Fraction = Fraction(0)) -> None:
        self.edits.append((gid, edit, Fraction(mult)))

    def slice_layout(self, layout: Layout, name: str, axis: int, role: str, scale: Fraction = Fraction(1),
                     rows: tuple[int, int] | None = None) -> None:
        """Record ``name[axis]`` (within ``rows`` of axis 0) as following ``layout`` (offsets scaled by ``scale``)."""
        offset = Fraction(0)
        for seg in layout:
            if seg.gid is not None:
                self.add_slice(seg.gid, name, axis, offset, seg.block * scale, role, rows)
            offset += seg.length * scale

    def freeze_layout(self, layout: Layout | None, reason: str) -> None:
        for seg in layout or []:
            self.freeze(seg.gid, reason)

    # ------------------------------------------------------------------ layouts
    def get(self, name: str) -> dict[int, Layout]:
        return self.layouts.get(name, {})

    def set(self, name: str, layouts: dict[int, Layout]) -> None:
        layouts = {axis: lay for axis, lay in layouts.items() if any(s.gid is not None for s in lay)}
        if layouts:
            self.layouts[name] = layouts
            for axis, lay in layouts.items():
                offset = 0
                for seg in lay:
                    if seg.gid is not None:
                        self.members.append((seg.gid, name, axis, offset, seg.block))
                    offset += seg.length

    def freeze_value(self, name: str, reason: str) -> None:
        for lay in self.get(name).values():
            self.freeze_layout(lay, reason)

    def unify(self, a: Layout, b: Layout, where: str) -> bool:
        """Couple two aligned layouts of the same extent (elementwise ops): segment by segment."""
        if a is b:
            return True
        self._align(a, b)
        a, b = _merge_untracked(a), _merge_untracked(b)
        if _cuts(a) != _cuts(b):
            reason = f"{where}: channel layouts of the operands do not line up"
            self.freeze_layout(a, reason)
            self.freeze_layout(b, reason)
            return False
        ok = True
        for sa, sb in zip(a, b):
            if sa.gid is None and sb.gid is None:
                continue
            if sa.gid is None or sb.gid is None:
                self.freeze(sa.gid if sb.gid is None else sb.gid, f"{where}: combined with channels that cannot be cut")
                ok = False
                continue
            ok = self.union(sa.gid, sb.gid, where) and ok
        return ok

    def regroup(self, layout: Layout, inner: int, where: str) -> Layout | None:
        """The layout of an axis of extent L split as (L/inner, inner), on the outer axis; None = impossible.

        Coarsens groups so that every channel covers whole multiples of ``inner`` elements.
        """
        offset = 0
        for seg in layout:
            if offset % inner or seg.length % inner:
                self.freeze_layout(layout, f"{where}: channel blocks do not align with the reshape")
                return None
            if seg.gid is not None:
                eff_block = self.eff(seg.gid, seg.block)
                need = Fraction(inner) / eff_block
                if need > 1:
                    if need.denominator != 1 or not self.coarsen(seg.gid, int(need), where):
                        self.freeze_layout(layout, f"{where}: cannot keep channels whole across the reshape")
                        return None
                elif (eff_block / inner).denominator != 1:
                    self.freeze_layout(layout, f"{where}: channel blocks do not align with the reshape")
                    return None
            offset += seg.length
        return [Seg(s.gid, s.length // inner, s.block / inner) for s in layout]

    def _align(self, a: Layout, b: Layout) -> None:
        """Split groups so that both layouts have the same segment boundaries (concat * SE gate, ...)."""
        for _ in range(len(a) + len(b) + 2):
            cuts_a, cuts_b = set(_cuts(_merge_untracked(a))), set(_cuts(_merge_untracked(b)))
            missing = sorted((pos, b) for pos in cuts_a - cuts_b) + sorted((pos, a) for pos in cuts_b - cuts_a)
            if not missing:
                return
            position, layout = missing[0]
            before = len(layout)
            self.split_at(layout, position)
            if len(layout) == before:
                return  # inside an untracked run or a channel: unify freezes

    def split_at(self, layout: Layout, position: int) -> bool:
        """Make ``position`` a segment boundary of ``layout`` (a chunk/split through one group).

        The group (with everything coupled to it) becomes two groups, channels [0, k) and [k, n), in
        every record and every stored layout; False when the cut falls inside a channel.
        """
        offset = 0
        for seg in layout:
            if offset < position < offset + seg.length and seg.gid is not None:
                channels = Fraction(position - offset) / self.eff(seg.gid, seg.block)
                if channels.denominator != 1:
                    return False
                self.split_root(self.find(seg.gid), int(channels))
                return True
            offset += seg.length
        return True

    def split_root(self, root: int, k: int) -> None:
        """Group ``root`` (and everything coupled to it) keeps its first k channels; the rest become a new group."""
        old = list(self.sets[root])
        mapping = {}
        for gid in old:
            cut = k * self.unit[gid]
            new = self.new_group(self.size[gid] - cut, self.source[gid])
            self.unit[new], self.size[gid] = self.unit[gid], cut
            mapping[gid] = (new, cut)
        new_root = mapping[root][0]
        for new, _ in mapping.values():
            self.sets.pop(new, None)
            self.parent[new] = new_root
        self.sets[new_root] = [new for new, _ in mapping.values()]
        if root in self.frozen:
            self.frozen[new_root] = self.frozen[root]
        self.normalized.update(mapping[gid][0] for gid in old if gid in self.normalized)
        for gid, name, axis, offset, block, role, rows in list(self.slices):
            if gid in mapping:
                new, cut = mapping[gid]
                self.slices.append((new, name, axis, offset + cut * block, block, role, rows))
        for gid, edit, mult in list(self.edits):
            if gid in mapping:
                self.edits.append((mapping[gid][0], edit, mult))
        for gid, name, axis, offset, block in list(self.members):
            if gid in mapping:
                new, cut = mapping[gid]
                self.members.append((new, name, axis, offset + cut * block, block))
        seen: set[int] = set()
        for layouts in [*self.layouts.values(), *({0: b.layout} for b in self.balances)]:
            for lay in layouts.values():
                if id(lay) in seen:
                    continue
                seen.add(id(lay))
                if any(seg.gid in mapping for seg in lay):
                    lay[:] = [part for seg in lay for part in _halves(seg, mapping)]

    # ------------------------------------------------------------------ result
    def finish(self) -> list[ChannelGroup]:
        groups: dict[int, ChannelGroup] = {}
        order: list[int] = []
        for gid in range(len(self.size)):
            root = self.find(gid)
            if root not in groups:
                groups[root] = ChannelGroup(id=len(order), size=self.eff_size(root), frozen=self.frozen.get(root),
                                            source=self.source[root])
                order.append(root)
        for gid, name, axis, offset, block, role, rows in self.slices:
            group = groups[self.find(gid)]
            group.slices.append(InitializerSlice(name, axis, _int(offset), _int(self.eff(gid, block)), role, rows,
                                                 self.spans.get((name, axis), 1)))
        seen: set[tuple] = set()
        for gid, edit, mult in self.edits:
            group = groups[self.find(gid)]
            eff = _int(self.eff(gid, mult))
            key = (group.id, edit.kind, edit.target, edit.index, edit.attr)
            if edit.kind in ("minus_one", "pin"):  # not per channel: mult (pin: the original size) stays
                if key in seen:
                    continue
                seen.add(key)
                group.edits.append(edit)
                continue
            merged = [e for e in group.edits if (e.kind, e.target, e.index, e.attr) == key[1:]]
            if merged:
                group.edits.remove(merged[0])
                eff += merged[0].mult
            group.edits.append(Edit(edit.kind, edit.target, edit.index, eff, edit.attr))
        for gid in self.normalized:
            groups[self.find(gid)].normalized = True
        for gid, name, axis, offset, block in self.members:
            dynamic = self.dynamic_axes.get(name, set())
            if dynamic is None or axis in dynamic:
                continue  # channels merged with a dynamic axis (batch x heads): positions hold for a stand-in only
            groups[self.find(gid)].members.append(Member(name, axis, _int(offset), _int(self.eff(gid, block))))
        for group in groups.values():
            if group.frozen is None and not any(s.role == "out" for s in group.slices):
                group.frozen = "no producer weights to cut"
        return [groups[root] for root in order]


def _halves(seg: Seg, mapping: dict) -> list[Seg]:
    if seg.gid not in mapping:
        return [seg]
    new, cut = mapping[seg.gid]
    first = int(cut * seg.block)
    return [Seg(seg.gid, first, seg.block), Seg(new, seg.length - first, seg.block)]


def _cuts(layout: Layout) -> list[int]:
    out, offset = [], 0
    for seg in layout:
        offset += seg.length
        out.append(offset)
    return out


def _merge_untracked(layout: Layout) -> Layout:
    out: Layout = []
    for seg in layout:
        if seg.gid is None and out and out[-1].gid is None:
            out[-1] = Seg(None, out[-1].length + seg.length)
        else:
            out.append(seg)
    return out


def _int(value: Fraction) -> int:
    if Fraction(value).denominator != 1:
        raise AssertionError(f"non-integral channel mapping {value}")
    return int(value)


def total(layout: Layout) -> int:
    return sum(s.length for s in layout)


def cut(layout: Layout, start: int, end: int) -> Layout | None:
    """The sub-layout of [start, end), or None when the cut splits a group's segment."""
    out, offset = [], 0
    for seg in layout:
        lo, hi = max(start, offset), min(end, offset + seg.length)
        if lo < hi:
            if seg.gid is None:
                out.append(Seg(None, hi - lo))
            elif lo == offset and hi == offset + seg.length:
                out.append(seg)
            else:
                return None
        offset += seg.length
    return out
