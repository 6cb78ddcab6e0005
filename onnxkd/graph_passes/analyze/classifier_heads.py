"""Where a classifier's outputs come from: the class scores behind a Softmax, a class id or a confidence.

Exported classifiers often end in a Softmax (probabilities), and deployment exports in the class id itself
(``ArgMax``) and its confidence (``ReduceMax`` of the probabilities) or the top-k (``TopK``): integer ids and
per-sample maxima that cannot be distilled. The scores they are computed from, over the class axis (1 or -1),
can: the logits when a Softmax sits between (KL at a temperature needs logits, not probabilities).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_PROBABILITY_OPS = frozenset({"Softmax", "LogSoftmax"})
_SELECT_OPS = frozenset({"ArgMax", "ReduceMax", "TopK"})  # one class (or k) picked from the scores
_PASS_THROUGH = frozenset({"Identity", "Cast", "Squeeze", "Unsqueeze"})


def scores_behind(model: ir.Model) -> dict[str, str]:
    """Graph output name -> the class-scores tensor it comes from: the input of the Softmax/LogSoftmax over
    axis 1 or -1 it is, or that an ArgMax/ReduceMax/TopK over that axis reads; an ArgMax of anything else: its
    input. Whether that is ``[N, C]`` class scores is for the caller to check on a real batch."""
    found = {}
    for value in model.graph.outputs:
        node = _through(value.producer())
        if node is not None and node.op_type in _SELECT_OPS and _over_classes(node, model) and node.inputs[0]:
            scores = node.inputs[0]
            logits = _logits(_through(scores.producer()), model)
            if logits is not None or node.op_type == "ArgMax":  # a max or top-k of what is not probabilities
                found[value.name] = logits or scores.name       # may be anything (a detector's best queries)
        elif (logits := _logits(node, model)) is not None:
            found[value.name] = logits
    return found


def class_id_outputs(model: ir.Model) -> set[str]:
    """Graph outputs that are class ids: an ArgMax over axis 1 or -1 (through casts and squeezes)."""
    return {value.name for value in model.graph.outputs
            if (node := _through(value.producer())) is not None and node.op_type == "ArgMax"
            and _over_classes(node, model)}


def token_score_outputs(model: ir.Model) -> set[str]:
    """Graph outputs of rank 3 that are class scores per position over their last axis: a Softmax or LogSoftmax
    over it (a CTC recognizer's log-probabilities), or a linear head named like logits (a language model's or a
    tagger's ``logits``, as Hugging Face names them). Their samples are sequences; their agreement is per token."""
    found = set()
    for value in model.graph.outputs:
        if value.shape is None or len(value.shape) != 3:
            continue
        node = _through(value.producer())
        if node is None:
            continue
        if node.op_type in _PROBABILITY_OPS:
            if probability_axis(node, model) in (-1, 2):
                found.add(value.name)
        elif node.op_type in ("MatMul", "Gemm", "Add") and "logit" in value.name.lower():
            found.add(value.name)
    return found


def _through(node: ir.Node | None) -> ir.Node | None:
    while node is not None and node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    return node


def _logits(node: ir.Node | None, model: ir.Model) -> str | None:
    if node is None or node.op_type not in _PROBABILITY_OPS or node.inputs[0] is None:
        return None
    return node.inputs[0].name if _over_classes(node, model) else None


def _over_classes(node: ir.Node, model: ir.Model) -> bool:
    """Whether the op works over axis 1 or -1 (the class axis of [N, C] scores)."""
    if node.op_type in _PROBABILITY_OPS:
        return probability_axis(node, model) in (1, -1)
    if node.op_type == "ReduceMax":
        axes = _reduce_axes(node)
        return axes is not None and len(axes) == 1 and axes[0] in (1, -1)
    return node.attributes.get_int("axis", -1 if node.op_type == "TopK" else 0) in (1, -1)


def probability_axis(node: ir.Node, model: ir.Model) -> int:
    """A Softmax's or LogSoftmax's axis: its attribute, else the opset's default (-1 from opset 13, 1 before)."""
    return node.attributes.get_int("axis", -1 if _opset(model) >= 13 else 1)


def _reduce_axes(node: ir.Node) -> list[int] | None:
    if "axes" in node.attributes:
        return list(node.attributes["axes"].value)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        constant = node.inputs[1].const_value
        if constant is None and node.inputs[1].producer() is not None \
                and node.inputs[1].producer().op_type == "Constant":
            constant = node.inputs[1].producer().attributes["value"].value
        return None if constant is None else [int(a) for a in np.asarray(constant.numpy()).ravel()]
    return None  # every axis


def _opset(model: ir.Model) -> int:
    from onnxkd.model import opset_of

    return opset_of(model)
