"""Integer inputs that index a table (token ids into an embedding): the ids the table has rows for.

A token id beyond the vocabulary reaches a Gather that onnxruntime refuses at run time and the torch bridge
fails on with an IndexError, in the middle of pruning or training. Known from the graph, it is checked with
the data's other values, before any stage, with one line naming the input.
"""

from __future__ import annotations

import onnx

# ops that pass the ids on unchanged, only cast or reshaped
_PASS_THROUGH = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose"})


def index_ranges(graph: onnx.GraphProto) -> dict[str, int]:
    """Graph input -> the rows of the smallest constant table a Gather looks its values up in (valid ids are
    ``[-rows, rows)``, as ONNX's Gather reads them); inputs that index no constant table are left out."""
    tables = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tables[node.output[0]] = list(node.attribute[0].t.dims)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranges = {}
    for value in graph.input:
        rows = _rows_indexed(value.name, consumers, tables)
        if rows:
            ranges[value.name] = min(rows)
    return ranges


def _rows_indexed(name: str, consumers: dict, tables: dict[str, list[int]]) -> list[int]:
    rows, seen, frontier = [], {name}, [name]
    while frontier:
        current = frontier.pop()
        for node in consumers.get(current, []):
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == current:
                table = tables.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if table and -len(table) <= axis < len(table) and table[axis] > 0:
                    rows.append(table[axis])
            elif node.op_type in _PASS_THROUGH and node.input[0] == current and node.output[0] not in seen:
                seen.add(node.output[0])
                frontier.append(node.output[0])
    return rows
