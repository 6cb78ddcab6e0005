"""Validation figures of the student against the teacher, per epoch (bridge, eval mode).

These steer training (progress lines, the best epoch); the figures people act on are measured again
with onnxruntime by ``onnxkd validate`` / ``compress``. Per class-score output: top-1 agreement with
the teacher and accuracy against labels; for scores per token [N, T, C], top-1 agreement per token; per other
output: relative squared error
sum((s - t)^2) / sum(t^2); and the distillation loss. Sums are pooled over batches and processes.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from onnxkd.distill import distributed
from onnxkd.distill.batches import Batch
from onnxkd.distill.objective import Objective
from onnxkd.distill.teacher import Teacher


def evaluate(student: Callable[[Batch], dict[str, torch.Tensor]], teacher: Teacher, objective: Objective,
             batches: Iterable[Batch], world: distributed.World, device: torch.device) -> dict:
    scored = objective.labelled_target
    maps = [t for t in objective.targets if not t.class_scores]
    tokens = next((t for t in objective.targets if t.class_axis == -1), None)  # scores per token [N, T, C]
    n = agree = correct = labelled = loss = error = reference = positions = token_agree = 0.0
    with torch.no_grad():
        for batch in batches:
            s, t = student(batch), teacher(batch)
            size = len(batch.indices)
            n += size
            loss += float(objective(s, t, None)[0]) * size
            if scored is not None:
                predicted = s[scored.tensor].argmax(1)
                agree += float((predicted == t[scored.tensor].argmax(1)).sum())
                if batch.labels is not None:
                    correct += float((predicted == batch.labels).sum())
                    labelled += size
            if tokens is not None:
                same = s[tokens.tensor].argmax(-1) == t[tokens.tensor].argmax(-1)
                token_agree, positions = token_agree + float(same.sum()), positions + same.numel()
            for target in maps:
                diff = s[target.tensor].float() - t[target.tensor].float()
                error += float(diff.square().sum())
                reference += float(t[target.tensor].float().square().sum())
    n, agree, correct, labelled, loss, error, reference, positions, token_agree = distributed.all_reduce_sum(
        [n, agree, correct, labelled, loss, error, reference, positions, token_agree], device, world)
    return {
        "n": int(n),
        "loss": loss / n if n else None,
        "agreement": agree / n if scored is not None and n else None,
        "token_agreement": token_agree / positions if positions else None,
        "accuracy": correct / labelled if labelled else None,
        "output_error": error / reference if maps and reference > 0 else None,
    }


def score(figures: dict) -> tuple[float, float]:
    """Higher is better: accuracy with labels, else agreement (of samples, else of tokens), else minus the output
    error; ties go to the lower distillation loss."""
    for key, sign in (("accuracy", 1), ("agreement", 1), ("token_agreement", 1), ("output_error", -1)):
        if figures.get(key) is not None:
            return sign * figures[key], -(figures["loss"] or 0.0)
    return -(figures["loss"] or 0.0), 0.0


def describe(figures: dict) -> str:
    """``agreement 98.1% · accuracy 97.2% · error 0.0123 · loss 0.0456`` (what is available)."""
    parts = []
    if figures.get("agreement") is not None:
        parts.append(f"agreement {figures['agreement']:.1%}")
    if figures.get("token_agreement") is not None:
        parts.append(f"token agreement {figures['token_agreement']:.1%}")
    if figures.get("accuracy") is not None:
        parts.append(f"accuracy {figures['accuracy']:.1%}")
    if figures.get("output_error") is not None:
        parts.append(f"output error {figures['output_error']:.4g}")
    if figures.get("loss") is not None:
        parts.append(f"loss {figures['loss']:.4g}")
    return " · ".join(parts)
