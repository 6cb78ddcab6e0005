"""What the student learns from: one target per float graph output, with its loss.

Class scores (an output ``[N, C]``, C > 1) are distilled with KL at temperature T (plus cross-entropy
when labels exist); everything else (maps, embeddings, regression) with MSE, or cosine on request. Scores per
token (``[N, T, C]``: ``token_score_outputs``) stay with MSE on their logits by default (6 epochs on a pruned
Llama-like decoder: 84.3% of tokens agreed with MSE, 82.7% with KL, within noise); ``--loss kl`` takes KL over
their last axis, not over the tokens.
When an output comes out of a Softmax/LogSoftmax (exported classifiers often end in one), or is the class id
or confidence picked from its scores (ArgMax, ReduceMax, TopK: deployment exports), the target is the scores,
the logits where a Softmax sits between (``graph_passes.analyze.classifier_heads``): they have the same tensor
name in teacher and student, and KL at a temperature needs logits, not probabilities. An output whose shape
follows its data (the boxes an end-to-end detector's NonMaxSuppression keeps) is not a target: the float
tensors that op reads, per sample, are (``graph_passes.analyze.data_shaped``). An output that puts box coordinates
in pixels next to class probabilities (a YOLO-family detector) is learned through the head tensors it is decoded
from (``graph_passes.analyze.output_parts``): logits all on one scale, where MSE on the output itself would weigh
a pixel of a box like a whole score. Half the output's weight goes to the heads' MSE, half to the probabilities
the decode's Softmaxes and Sigmoids make of them (KL over the DFL bins, binary KL per class, at temperature 1):
on benchmarks/detector_kd.py that took the student's mAP@0.5 from 0.376 to 0.395 and its agreement with the
teacher's detections from 0.448 to 0.509. ``--loss OUTPUT=...`` distils the output itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import onnx_ir as ir
import torch

from onnxkd.distill.config import LOSSES
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.classifier_heads import scores_behind, token_score_outputs
from onnxkd.graph_passes.analyze.compared import compared_tensors
from onnxkd.graph_passes.analyze.data_shaped import data_shaped
from onnxkd.graph_passes.analyze.output_parts import decodes


@dataclass
class Target:
    output: str  # the graph output
    tensor: str  # the tensor distilled: the output itself, or the logits feeding its Softmax
    loss: str  # "kl", "mse" or "cosine"
    weight: float
    class_scores: bool  # [N, C]: agreement, accuracy and cross-entropy apply
    inside: bool = False  # ``output`` is a tensor inside the graph that data-shaped outputs follow from
    class_axis: int = 1  # where KL finds the classes: -1 for scores per token [N, T, C]
    temperature: float | None = None  # None: the objective's; 1 for a detector's decode (its own probabilities)

    @property
    def captured(self) -> bool:
        """Not a graph output: read with ``module(..., capture=[tensor])``."""
        return self.tensor != self.output or self.inside

    def to_dict(self) -> dict:
        return asdict(self)


def parse_loss_option(values: str | list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``--loss auto|kl|mse|cosine`` or ``--loss OUTPUT=kind`` (repeatable) -> {output or "*": kind}."""
    if values is None:
        return {}
    values = [values] if isinstance(values, str) else list(values)
    chosen: dict[str, str] = {}
    for value in values:
        name, sep, kind = value.rpartition("=")
        key = name if sep else "*"
        if kind not in LOSSES + ("auto",):
            raise OnnxkdError(f"--loss {value!r}: choose auto, kl, mse or cosine (optionally OUTPUT=kind)")
        if kind != "auto":
            chosen[key] = kind
    return chosen


def plan_targets(model: ir.Model, teacher_outputs: Mapping[str, torch.Tensor], losses: Mapping[str, str] | None = None,
                 weights: Mapping[str, float] | None = None) -> list[Target]:
    """The targets of ``model`` (the student graph) given one batch of the teacher's outputs by name.

    ``teacher_outputs`` holds every tensor ``probed_tensors`` names.
    """
    losses, weights = dict(losses or {}), dict(weights or {})
    outputs = [v.name for v in model.graph.outputs]
    for name in list(losses) + list(weights):
        if name != "*" and name not in outputs:
            raise OnnxkdError(f"unknown output {name!r} in --loss/--output-weight; the model's outputs are "
                              f"{', '.join(map(repr, outputs))}")
    logits = scores_behind(model)
    shaped = data_shaped(model)
    per_token = token_score_outputs(model)
    # an output of boxes next to scores is learned through the heads it is decoded from, unless --loss names it:
    # half its weight on the heads' MSE, half on the probabilities its Softmaxes and Sigmoids make of them
    decoded = {o: heads for o, heads in decodes(model).items() if o not in losses}
    share = {head: weights.get(o, 1.0) / len(d.heads) / (2 if d.probabilities else 1)
             for o, d in decoded.items() for head in d.heads}
    targets = []
    for name in [t for o in outputs if o not in shaped.outputs for t in (decoded[o].heads if o in decoded else [o])] \
            + [t for t in shaped.sources if t not in outputs]:
        inside = name not in outputs
        tensor = logits.get(name, name)
        if teacher_outputs[tensor].dim() != 2 and teacher_outputs[name].is_floating_point():
            tensor = name  # a softmax over a map's channels: keep the output itself
        if any(target.tensor == tensor for target in targets):
            continue  # a class id and its confidence: the same scores
        value = teacher_outputs[tensor]
        if not value.is_floating_point():
            continue  # class ids, masks, counts: nothing to regress
        class_scores = value.dim() == 2 and value.shape[1] > 1
        tokens = name in per_token and value.dim() == 3 and value.shape[-1] > 1
        kind = losses.get(name, losses.get("*", "kl" if class_scores else "mse"))
        if kind == "kl" and value.dim() < 2:
            raise OnnxkdError(f"--loss kl for output {name!r}: KL needs class scores on axis 1, the output is "
                              f"shaped {list(value.shape)}")
        targets.append(Target(name, tensor, kind, float(share.get(name, weights.get(name, 1.0))), class_scores,
                              inside, -1 if tokens else 1))
    for output, d in decoded.items():  # KL over the DFL bins, binary KL per class, at the decode's own scale
        for tensor, op, axis in d.probabilities:
            targets.append(Target(tensor, tensor, "kl" if op == "softmax" else "binary_kl",
                                  weights.get(output, 1.0) / 2 / len(d.probabilities), False, True, axis,
                                  temperature=1.0))
    if not targets:
        raise OnnxkdError("no float output to distill: every graph output is an integer or bool tensor"
                          + (", or has a shape that follows its data" if shaped else ""))
    return targets


def probed_tensors(model: ir.Model) -> list[str]:
    """What one probe batch of the teacher must give ``plan_targets``: the graph outputs, and the tensors the
    model is held to in their place (``compared_tensors``: logits, the tensors a NonMaxSuppression reads)."""
    return list(dict.fromkeys([v.name for v in model.graph.outputs] + compared_tensors(model)))


def decoded_note(targets: list[Target], model: ir.Model) -> str | None:
    """One line naming the outputs distilled through the heads they are decoded from."""
    heads = {t.tensor for t in targets}
    decoded = {o: d.heads for o, d in decodes(model).items() if heads >= set(d.heads)}
    if not decoded:
        return None
    return "; ".join(f"output {o} puts box coordinates next to class probabilities: distilled on the {len(ts)} head "
                     f"tensors it is decoded from ({', '.join(ts)}) and on the probabilities its Softmax and Sigmoid "
                     f"make of them (--loss {o}=mse distils the output itself)" for o, ts in decoded.items())


def data_shaped_note(model: ir.Model) -> str | None:
    """One line saying which outputs are not distilled because their shape follows their data, and what is."""
    shaped = data_shaped(model)
    if not shaped:
        return None
    ops = ", ".join(sorted(set(shaped.outputs.values())))
    instead = f"distilled on the tensors it reads: {', '.join(shaped.sources)}" if shaped.sources else \
        "no tensor before it to distil"
    return f"output(s) {', '.join(shaped.outputs)} have a shape that follows their data ({ops}): {instead}"
