"""Outputs that put values of different kinds side by side: a detector's decoded boxes next to its scores.

YOLO-family exports (ultralytics' v5 to v11, the most shipped detectors) end in one tensor per image that
concatenates box coordinates, in pixels (0 to 640), with class probabilities (a Sigmoid's, 0 to 1):
``[N, 4 + classes, anchors]`` (v8 and later), or ``[N, anchors, 5 + classes]`` (v5, v7: objectness and classes).
Measured as one tensor, the scores are invisible: a student or an int8 model whose scores are all wrong keeps a
cosine of 1.0 and a relative error under 1%, since the coordinates' magnitude swamps them. onnxruntime's int8
quantization of such a tensor gives it one 8-bit range, 2.5 pixels a step, which rounds every score to 0.

So such an output is measured part by part (``output_parts``); the nodes computing it from the last learned
layers (the decode: anchors, strides, the DFL expectation, the Sigmoid, the concatenations) are known
(``decoding_nodes``), so that quantization can leave them float; and the learned tensors they read
(``decodes``: each level's box and class logits) are what a student is distilled on in the output's place.

A part is a run of positions along one axis that are probabilities (an output of Sigmoid or Softmax, through
slicing and reshaping) or other values; an output has parts only when both kinds meet in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxkd.graph_passes.analyze.classifier_heads import probability_axis
from onnxkd.graph_passes.analyze.concrete_shapes import concrete_shapes

_PROBABILITY_OPS = frozenset({"Sigmoid", "Softmax", "HardSigmoid"})
# ops that select or move a probability's elements without changing its values
# (TopK and ReduceMax: the best class's score, as NMS-free heads such as YOLOv10's pick it)
_SELECTING = frozenset({"Identity", "Slice", "Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
                        "Gather", "GatherElements", "GatherND", "Expand", "TopK", "ReduceMax"})
# the learned layers a decode starts from (a Conv that reads probabilities is the decode's own expectation: DFL)
_LEARNED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"})
_DEPTH = 12  # how far back a part's kind is looked for


@dataclass(frozen=True)
class Part:
    start: int
    stop: int
    probabilities: bool  # a Sigmoid's or Softmax's values (0 to 1); else other values (coordinates, logits)

    @property
    def label(self) -> str:
        return f"[{self.start}:{self.stop}] {'probabilities' if self.probabilities else 'values'}"

    def to_dict(self) -> dict:
        return {"start": self.start, "stop": self.stop, "probabilities": self.probabilities}


@dataclass(frozen=True)
class OutputParts:
    axis: int  # non-negative
    parts: tuple[Part, ...]

    def to_dict(self) -> dict:
        return {"axis": self.axis, "parts": [p.to_dict() for p in self.parts]}


Layout = tuple[int, tuple[tuple[int, bool], ...]]  # (axis, ((size, probabilities), ...))


def output_parts(model: ir.Model) -> dict[str, OutputParts]:
    """Graph output name -> its parts, for outputs where probabilities and other values meet along an axis."""
    candidates = [v for v in model.graph.outputs if _mixes(v)]
    if not candidates:
        return {}
    shapes = _shapes(model)
    found = {}
    for value in candidates:
        layout = _layout(value, shapes, _DEPTH)
        if layout is None:
            continue
        axis, runs = layout
        parts, start = [], 0
        for size, probabilities in runs:
            if parts and parts[-1].probabilities == probabilities:
                parts[-1] = Part(parts[-1].start, start + size, probabilities)
            else:
                parts.append(Part(start, start + size, probabilities))
            start += size
        if len({p.probabilities for p in parts}) == 2:
            found[value.name] = OutputParts(axis, tuple(parts))
    return found


def decoding_nodes(model: ir.Model) -> dict[str, str]:
    """Node name -> the output it decodes: every node between an output with parts and the learned layers it is
    computed from (walking back from the output, stopping at Conv/Gemm/MatMul/Einsum nodes that do not read
    probabilities)."""
    return {node.name: output for node, output in _decoding(model).items()}


@dataclass(frozen=True)
class Decode:
    """What an output with parts is computed from: the float tensors its decode reads from the learned layers
    (each level's box and class head, in graph order: the output is a fixed function of them, all logits), and
    the (tensor, "softmax" or "sigmoid", axis) its Softmaxes and Sigmoids read (the DFL bins' and the classes'
    logits, which distillation also matches as probabilities)."""
    heads: tuple[str, ...]
    probabilities: tuple[tuple[str, str, int], ...]

    @property
    def tensors(self) -> list[str]:
        """Everything distilled in the output's place: the heads, then the logits the probabilities are made of."""
        return [*self.heads, *(tensor for tensor, _, _ in self.probabilities)]


def decodes(model: ir.Model) -> dict[str, Decode]:
    """Output with parts -> what a student learns in its place (``Decode``)."""
    decoding = _decoding(model)
    heads: dict[str, list[str]] = {}
    readers: dict[str, list[tuple[str, str, int]]] = {}
    for node in model.graph:
        if node not in decoding or node.op_type == "Shape":  # a size read is not a value used
            continue
        output = decoding[node]
        if node.op_type in ("Softmax", "Sigmoid") and node.inputs[0] is not None:
            axis = probability_axis(node, model) if node.op_type == "Softmax" else 1
            readers.setdefault(output, []).append((node.inputs[0].name, node.op_type.lower(), axis))
        for value in node.inputs:
            producer = None if value is None else value.producer()
            if producer is None or producer in decoding or producer.op_type == "Constant":
                continue
            if value.dtype is not None and not value.dtype.is_floating_point():
                continue
            sources = heads.setdefault(output, [])
            if value.name not in sources:
                sources.append(value.name)
    return {o: Decode(tuple(found), tuple(readers.get(o, ()))) for o, found in heads.items()}


def _decoding(model: ir.Model) -> dict[ir.Node, str]:
    """``decoding_nodes`` by node (exporters may leave nodes unnamed)."""
    found: dict[ir.Node, str] = {}
    for name in output_parts(model):
        output = next(v for v in model.graph.outputs if v.name == name)
        stack = [output.producer()]
        while stack:
            node = stack.pop()
            if node is None or node in found:
                continue
            if node.op_type in _LEARNED and not (node.inputs and _probabilities(node.inputs[0], _DEPTH)):
                continue
            found[node] = name
            stack.extend(v.producer() for v in node.inputs if v is not None)
    return found


def _mixes(value: ir.Value) -> bool:
    """A cheap structural check before shapes are inferred: a Concat, through reshapes, with a probability in it."""
    node = value.producer()
    for _ in range(_DEPTH):
        if node is None:
            return False
        if node.op_type == "Concat":
            return any(v is not None and (_probabilities(v, _DEPTH) or _mixes(v)) for v in node.inputs)
        if node.op_type not in ("Reshape", "Transpose", "Identity") or node.inputs[0] is None:
            return False
        node = node.inputs[0].producer()
    return False


def _probabilities(value: ir.Value, depth: int) -> bool:
    node = value.producer()
    while depth > 0 and node is not None:
        if node.op_type in _PROBABILITY_OPS:
            return True
        if node.op_type not in _SELECTING or not node.inputs or node.inputs[0] is None:
            return False
        node, depth = node.inputs[0].producer(), depth - 1
    return False


def _shapes(model: ir.Model) -> dict[str, list[int]]:
    """Static shapes: the recorded ones, else inferred with stand-in sizes for dynamic dims (the sizes along a
    part axis never depend on them: they are the head's channels)."""
    recorded = {}
    for node in model.graph:
        for v in node.outputs:
            if v.shape is not None:
                recorded[v.name] = [d if isinstance(d, int) else None for d in v.shape]
    inferred, _ = concrete_shapes(model)
    return {**recorded, **{k: list(s) for k, s in inferred.items()}}


def _rank(value: ir.Value, shapes: dict[str, list[int]]) -> int | None:
    shape = shapes.get(value.name)
    return None if shape is None else len(shape)


def _layout(value: ir.Value, shapes: dict[str, list[int]], depth: int) -> Layout | None:
    """Where ``value``'s parts lie: (axis, runs of (size, probabilities)), or None."""
    node, rank = value.producer(), _rank(value, shapes)
    if node is None or rank is None or depth == 0:
        return None
    if node.op_type == "Identity":
        return _layout(node.inputs[0], shapes, depth - 1)
    if node.op_type == "Transpose":
        inner = _layout(node.inputs[0], shapes, depth - 1)
        perm = node.attributes.get_ints("perm", list(range(rank))[::-1])
        return None if inner is None else (list(perm).index(inner[0]), inner[1])
    if node.op_type == "Reshape":  # keeps the parts when they lie on the last axis and that axis is kept
        inner = _layout(node.inputs[0], shapes, depth - 1)
        source = shapes.get(node.inputs[0].name)
        if inner is None or source is None or inner[0] != len(source) - 1:
            return None
        kept = shapes[value.name][-1] == source[-1] and source[-1] is not None
        return (rank - 1, inner[1]) if kept else None
    if node.op_type != "Concat":
        return None
    axis = node.attributes.get_int("axis", 0) % rank
    inner = [_layout(v, shapes, depth - 1) for v in node.inputs]
    if inner and all(layout is not None and layout[0] != axis for layout in inner) \
            and len({layout for layout in inner}) == 1:
        return inner[0]  # the same parts in every piece, stacked along another axis (v5's detection levels)
    runs: list[tuple[int, bool]] = []
    for v, layout in zip(node.inputs, inner):
        if layout is not None and layout[0] == axis:
            runs.extend(layout[1])
            continue
        size = (shapes.get(v.name) or [None] * rank)[axis]
        if size is None:
            return None
        runs.append((size, _probabilities(v, depth)))
    return axis, tuple(runs)
