"""Channel groups: the (tensor, axis) dimensions cut together, and everything that changes with them.

A group of ``size`` channels maps channel ``c`` to the indices ``[offset + c*block, offset + (c+1)*block)``
along ``axis`` of each member tensor and of each initializer slice. Edits are constants (attributes,
shape entries) that shrink by ``mult`` per removed channel. All plain data, JSON-serialisable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Slice roles: "out" = a producer's output rows, "in" = a consumer's contracted input (where the
# zero-at-consumers oracle zeroes), "param" = per-channel elementwise parameters, "bn_scale" = a
# normalisation scale (the `bn` criterion), "stat" = running statistics (not importance).
ROLES = ("out", "in", "param", "bn_scale", "stat")


@dataclass(frozen=True)
class Member:
    tensor: str
    axis: int
    offset: int
    block: int


@dataclass(frozen=True)
class InitializerSlice:
    """Channel c of the group is ``[offset + c*block, offset + (c+1)*block)`` along ``axis`` of initializer
    ``name``; with ``rows`` [start, stop) only within those indices of axis 0 (a grouped conv whose conv
    groups read their input channels at different positions: each group's rows get their own columns).
    ``span``: output elements that one index along ``axis`` makes, where the weight's later axes are outputs too
    (an EinsumDense kernel [dim, heads, head_dim]: a head is head_dim columns)."""

    name: str
    axis: int
    offset: int
    block: int
    role: str
    rows: tuple[int, int] | None = None
    span: int = 1

    def view(self, array):
        """The part of ``array`` this slice indexes into (all of it, or its rows)."""
        return array if self.rows is None else array[self.rows[0]:self.rows[1]]


@dataclass(frozen=True)
class Edit:
    """A constant that shrinks by ``mult`` for every removed channel of the group.

    kind "attr": node attribute ``attr`` (``index`` into an INTS attribute, or -1 for an INT);
    kind "tensor": entry ``index`` of the int64 initializer ``target``;
    kind "minus_one": input ``index`` of Concat node ``target`` becomes the constant [-1] once any
    channel is removed (a dynamic Reshape entry that would otherwise still read the old size).
    kind "pin": entry ``index`` of Shape node ``target``'s output keeps the original size ``mult`` once any
    channel is removed (shape arithmetic such as head_dim = hidden // heads must not see a cut hidden size).
    """

    kind: str
    target: str
    index: int
    mult: int = 0
    attr: str = ""


@dataclass
class ChannelGroup:
    id: int
    size: int
    members: list[Member] = field(default_factory=list)
    slices: list[InitializerSlice] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    divisor: int = 1
    frozen: str | None = None
    source: str = ""  # the node whose output channels started the group
    # cut through a LayerNormalization's statistics (opt-in ``prune_normalized``): the pruned model is
    # the network at a smaller hidden size, not the original with channels zeroed at their consumers
    normalized: bool = False

    @property
    def prunable(self) -> bool:
        return self.frozen is None and self.size > 1

    @property
    def channel_block(self) -> int:
        """Elements per channel in the producer's output (heads: head_dim; plain channels: 1)."""
        blocks = [s.block * s.span for s in self.slices if s.role == "out"] or [s.block for s in self.slices] or [1]
        return min(blocks)

    @property
    def outputs_per_channel(self) -> int:
        """Output rows of the (first) producer that one channel covers, all its parts together (channel i of every
        conv group of a grouped conv; q, k and v of a packed projection): what ``--round-to`` keeps a multiple of."""
        outs = [s for s in self.slices if s.role == "out"]
        if not outs:
            return self.channel_block
        return sum(s.block * s.span for s in outs if (s.name, s.axis) == (outs[0].name, outs[0].axis))

    def channels(self, units: int | None = None) -> int:
        """Channels of the producer's output that ``units`` of the group's units (default: all) cover: a unit is a
        channel, or a norm group of a GroupNorm, a head, one channel of every group of a grouped conv."""
        return (self.size if units is None else units) * self.outputs_per_channel

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelGroup":
        return cls(
            id=data["id"], size=data["size"], divisor=data.get("divisor", 1), frozen=data.get("frozen"),
            source=data.get("source", ""), normalized=data.get("normalized", False),
            members=[Member(**m) for m in data.get("members", [])],
            slices=[InitializerSlice(**{**s, "rows": tuple(s["rows"]) if s.get("rows") else None})
                    for s in data.get("slices", [])],
            edits=[Edit(**e) for e in data.get("edits", [])],
        )
