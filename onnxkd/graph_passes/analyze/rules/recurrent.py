"""Rules for the recurrent ops (LSTM, GRU, RNN): they consume the input's channels and start a group of hidden
units.

ONNX lays the weights out per direction, the gates stacked on axis 1: W [dirs, gates*H, input], R [dirs, gates*H,
H], B [dirs, 2*gates*H] (W's biases, then R's), peepholes P [dirs, 3*H], initial states [dirs, batch, H] (batch
first with ``layout=1``). Hidden unit c is row c of every gate block, column c of R (what the previous step's h_c
feeds), and entry c of every state. A unit is removed from both directions at once. Its only path to other units
and to the next layer is its h: zeroing R's column and the consumers' inputs is the unit removed, which is the
pruning oracle. ``hidden_size`` shrinks with the group. The initial states must be absent (zeros; see
``normalize.zero_states``) or initializers to be sliced; otherwise the hidden size stays whole, while the input's
channels are still cut from W.
"""

from __future__ import annotations

from fractions import Fraction

from onnxkd.graph_passes.analyze.groups import Edit
from onnxkd.graph_passes.analyze.layout import Seg
from onnxkd.graph_passes.analyze.rules.registry import Ctx, rule
from onnxkd.graph_passes.metrics import RECURRENT_GATES

X, W, R, B, INITIAL_H, INITIAL_C, PEEPHOLES = 0, 1, 2, 3, 5, 6, 7
# Y [seq, dirs, batch, H] (layout 0) or [batch, seq, dirs, H]; Y_h and Y_c [dirs, batch, H] or [batch, dirs, H]
HIDDEN_AXIS = {0: 3, 1: 2, 2: 2}


@rule("LSTM", "GRU", "RNN")
def recurrent(ctx: Ctx) -> None:
    weight = ctx.initializer(W)
    if weight is None or ctx.in_shape(W) is None:
        ctx.freeze_inputs(f"weights are not plain initializers ({ctx.where})")
        return
    layouts = ctx.layouts(X)
    for axis, lay in layouts.items():
        if axis != 2:
            ctx.freeze(lay, "a recurrent op runs along this axis")
    if 2 in layouts:
        ctx.state.slice_layout(layouts[2], weight, 2, "in")
    _hidden_group(ctx, weight)


def _hidden_group(ctx: Ctx, weight: str) -> None:
    """A new group of the node's hidden units, when every tensor sized by them can be sliced."""
    gates, hidden = RECURRENT_GATES[ctx.node.op_type], ctx.attr("hidden_size")
    recurrence, bias = ctx.initializer(R), ctx.initializer(B)
    states = [slot for slot in (INITIAL_H, INITIAL_C, PEEPHOLES) if ctx.input(slot) is not None]
    plain = (recurrence is not None and hidden and (ctx.input(B) is None or bias is not None)
             and all(ctx.initializer(slot) is not None for slot in states))
    if not plain:  # the outputs carry no group: the hidden size stays whole
        return
    gid = ctx.state.new_group(hidden, ctx.node.name or ctx.node.outputs[0].name)
    one = Fraction(1)
    for gate in range(gates):
        ctx.state.add_slice(gid, weight, 1, gate * hidden, one, "out")
        ctx.state.add_slice(gid, recurrence, 1, gate * hidden, one, "out")
    ctx.state.add_slice(gid, recurrence, 2, 0, one, "in")
    if bias is not None:
        for part in range(2 * gates):
            ctx.state.add_slice(gid, bias, 1, part * hidden, one, "out")
    for slot in states:
        name = ctx.initializer(slot)
        if slot == PEEPHOLES:
            for gate in range(3):
                ctx.state.add_slice(gid, name, 1, gate * hidden, one, "param")
        else:
            ctx.state.add_slice(gid, name, 2, 0, one, "param")
    ctx.state.add_edit(gid, Edit("attr", ctx.node.name, -1, attr="hidden_size"), one)
    for i in range(len(ctx.node.outputs)):
        ctx.set_out({HIDDEN_AXIS[i]: [Seg(gid, hidden)]}, i)
