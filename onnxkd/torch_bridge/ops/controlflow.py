"""Control flow (If, Loop, Scan) and the sequence/optional value ops.

Bodies arrive as ``Subgraph`` objects (program.py): ``body(*inputs)`` returns the body's outputs as a
list and reads tensors of the enclosing scope by name. Sequences are Python lists, an empty optional is None.
"""

from __future__ import annotations

import torch

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge.ops._common import as_ints, normalize_axis
from onnxkd.torch_bridge.registry import register


def _scalar(ctx, value, dtype, *like):
    device = next((v.device for v in like if isinstance(v, torch.Tensor)), ctx.state.device)
    return torch.tensor(value, dtype=dtype, device=device)


@register("If", since=1)
def if_(ctx, cond, *, then_branch, else_branch):
    branch = then_branch if bool(cond.reshape(-1)[0]) else else_branch
    return tuple(branch())


@register("Loop", since=1)
def loop(ctx, trip_count, cond, *carried, body):
    limit = as_ints(trip_count)[0] if trip_count is not None and trip_count.numel() else None
    running = True if cond is None or cond.numel() == 0 else bool(cond.reshape(-1)[0])
    carried = list(carried)
    scans: list[list] = []
    step = 0
    while running and (limit is None or step < limit):
        outputs = body(_scalar(ctx, step, torch.int64, trip_count), _scalar(ctx, running, torch.bool, cond), *carried)
        running = bool(outputs[0].reshape(-1)[0])
        carried = list(outputs[1:1 + len(carried)])
        scans.append(outputs[1 + len(carried):])
        step += 1
    scan_count = ctx.num_outputs - len(carried)
    stacked = []
    for k in range(scan_count):
        if scans:
            stacked.append(torch.stack([s[k] for s in scans]))
        else:  # no iteration ran: the scan output's element shape is unknown, only its length (0) is
            stacked.append(torch.zeros(0, device=ctx.state.device))
    return tuple(carried + stacked)


def _scan(ctx, states, scans, body, axes, directions, out_axes, out_directions):
    states = list(states)
    axes = axes or [0] * len(scans)
    directions = directions or [0] * len(scans)
    length = scans[0].shape[normalize_axis(axes[0], scans[0].dim())] if scans else 0
    outputs_per_step = []
    for step in range(length):
        slices = []
        for x, axis, direction in zip(scans, axes, directions):
            position = length - 1 - step if direction else step
            slices.append(x.select(normalize_axis(axis, x.dim()), position))
        outputs = body(*states, *slices)
        states = list(outputs[:len(states)])
        outputs_per_step.append(outputs[len(states):])
    count = len(body.program.output_names) - len(states)
    out_axes = out_axes or [0] * count
    out_directions = out_directions or [0] * count
    stacked = []
    for k in range(count):
        column = [o[k] for o in outputs_per_step]
        if out_directions[k]:
            column = column[::-1]
        stacked.append(torch.stack(column, normalize_axis(out_axes[k], column[0].dim() + 1)))
    return states, stacked


@register("Scan", since=8)
def scan_v8(ctx, sequence_lens, *inputs, body, num_scan_inputs, directions=None):
    state_count = len(inputs) - num_scan_inputs
    batch = inputs[0].shape[0]
    lengths = as_ints(sequence_lens) if sequence_lens is not None else None
    per_batch = []
    for b in range(batch):
        scans = [x[b] for x in inputs[state_count:]]
        if lengths is not None and lengths[b] != scans[0].shape[0]:
            raise OnnxkdError(f"node {ctx.node_name!r}: Scan-8 with ragged sequence_lens is not supported")
        per_batch.append(_scan(ctx, [x[b] for x in inputs[:state_count]], scans, body, None, directions, None, None))
    states = [torch.stack([p[0][i] for p in per_batch]) for i in range(state_count)]
    scanned = [torch.stack([p[1][i] for p in per_batch]) for i in range(len(per_batch[0][1]))]
    return tuple(states + scanned)


@register("Scan", since=9)
def scan(ctx, *inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    state_count = len(inputs) - num_scan_inputs
    states, scanned = _scan(ctx, inputs[:state_count], inputs[state_count:], body, scan_input_axes,
                            scan_input_directions, scan_output_axes, scan_output_directions)
    return tuple(states + scanned)


# ---------------------------------------------------------------- sequences


def _position(position, length, default):
    index = default if position is None else as_ints(position)[0]
    return index + length if index < 0 else index


@register("SequenceEmpty", since=11)
def sequence_empty(ctx, *, dtype=None):
    return []


@register("SequenceConstruct", since=11)
def sequence_construct(ctx, *inputs):
    return list(inputs)


@register("SequenceInsert", since=11)
def sequence_insert(ctx, sequence, tensor, position=None):
    result = list(sequence)
    result.insert(_position(position, len(result), len(result)), tensor)
    return result


@register("SequenceErase", since=11)
def sequence_erase(ctx, sequence, position=None):
    result = list(sequence)
    del result[_position(position, len(result), len(result) - 1)]
    return result


@register("SequenceAt", since=11)
def sequence_at(ctx, sequence, position):
    return sequence[_position(position, len(sequence), 0)]


@register("SequenceLength", since=11)
def sequence_length(ctx, sequence):
    return _scalar(ctx, len(sequence), torch.int64, *sequence)


@register("SplitToSequence", since=11)
def split_to_sequence(ctx, x, split=None, *, axis=0, keepdims=1):
    axis = normalize_axis(axis, x.dim())
    if split is None:
        parts = torch.split(x, 1, dim=axis)
        return [p.squeeze(axis) for p in parts] if not keepdims else list(parts)
    sizes = as_ints(split)
    return list(torch.split(x, sizes[0] if split.dim() == 0 else sizes, dim=axis))


@register("ConcatFromSequence", since=11)
def concat_from_sequence(ctx, sequence, *, axis, new_axis=0):
    if new_axis:
        return torch.stack(sequence, normalize_axis(axis, sequence[0].dim() + 1))
    return torch.cat(sequence, axis)


@register("SequenceMap", since=17)
def sequence_map(ctx, sequence, *extra, body):
    results: list[list] = [[] for _ in body.program.output_names]
    for i in range(len(sequence)):
        args = [sequence[i]] + [v[i] if isinstance(v, list) else v for v in extra]
        for column, value in zip(results, body(*args)):
            column.append(value)
    return tuple(results)


# ---------------------------------------------------------------- optionals


@register("Optional", since=15)
def optional(ctx, value=None, *, type=None):  # noqa: A002  (ONNX attribute name)
    return value


@register("OptionalHasElement", since=15)
def optional_has_element(ctx, value=None):
    return _scalar(ctx, value is not None, torch.bool, value)


@register("OptionalGetElement", since=15)
def optional_get_element(ctx, value):
    if value is None:
        raise OnnxkdError(f"node {ctx.node_name!r}: OptionalGetElement on an empty optional")
    return value
