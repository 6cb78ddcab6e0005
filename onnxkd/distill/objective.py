"""The training loss: each output's distillation loss, cross-entropy on labels, feature hints.

    loss = sum over targets  w_o * L_o  +  hint_weight * mean over hints  hint(s_h, t_h)

where L_o is KL at temperature T for class scores (``alpha * KL + (1 - alpha) * CE`` on the class-score
output the labels belong to, when labels exist: ``data.labels.labelled_output``), MSE or cosine for other
outputs (see ``targets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onnxkd.distill import losses
from onnxkd.distill.augment import Mixed, mixed_cross_entropy
from onnxkd.distill.targets import Target


@dataclass
class Objective:
    targets: list[Target]
    hints: list[str]  # tensor names
    temperature: float
    alpha: float  # weight of the distillation term against cross-entropy, when labels exist
    hint_weight: float
    labelled: str | None = None  # the class-score output labels apply to (None: the first)

    @property
    def capture(self) -> list[str]:
        """Student tensors read by name: logits behind a Softmax output, hint features."""
        return list(dict.fromkeys([t.tensor for t in self.targets if t.captured] + self.hints))

    @property
    def labelled_target(self) -> Target | None:
        """The class-score output labels apply to: ``labelled``, else the first."""
        scored = [t for t in self.targets if t.class_scores]
        return next((t for t in scored if t.output == self.labelled), scored[0] if scored else None)

    def __call__(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                 labels: torch.Tensor | None, mixed: Mixed | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss and its parts (detached floats, for the progress line and the history). ``mixed``: how
        mixup/cutmix combined the samples, so that the labels are mixed like the inputs."""
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=next(iter(student.values())).device)
        labelled = self.labelled_target if labels is not None else None
        for target in self.targets:
            s, t = student[target.tensor], teacher[target.tensor]
            term = losses.output_loss(target.loss, s, t, target.temperature or self.temperature, target.class_axis)
            parts[f"{target.loss}:{target.output}"] = term
            if target is labelled:
                ce = mixed_cross_entropy(s, labels, mixed)
                parts["ce"] = ce
                term = self.alpha * term + (1 - self.alpha) * ce
            total = total + target.weight * term
        if self.hints:
            hint = sum(losses.hint(student[h], teacher[h]) for h in self.hints) / len(self.hints)
            parts["hint"] = hint
            total = total + self.hint_weight * hint
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def for_validation(self) -> "Objective":
        """The distillation terms alone: validation compares student and teacher outputs, not features."""
        return Objective(self.targets, [], self.temperature, self.alpha, self.hint_weight, self.labelled)
