"""The distillation losses, each a small function of student and teacher tensors, always computed in fp32.

Under bf16/fp16 autocast the models run in low precision, but softmax/log-softmax of logits and sums of
squares lose too much there: every loss casts its operands to fp32 first (autocast leaves explicitly
fp32 math alone once it is out of the autocast region's matmul/conv ops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.float() for t in tensors]


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, class_axis: int = 1) -> torch.Tensor:
    """Hinton's KD loss: KL(softmax(t/T) || softmax(s/T)) per sample, averaged (batchmean), times T².

    The T² factor keeps the gradient scale independent of T, so ``alpha`` means the same at any T.
    Class scores are on ``class_axis``: 1 for ``[N, C]`` (and per pixel of ``[N, C, H, W]``), -1 for scores per
    token ``[N, T, C]``, summed over the positions of a sample.
    """
    student, teacher = _fp32(student, teacher)
    log_p_student = F.log_softmax(student / temperature, dim=class_axis)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=class_axis)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def binary_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL of independent sigmoid scores (a detector's classes): BCE of the student's logits against the teacher's
    probabilities minus the teacher's own entropy (0 when they match), summed over a sample's scores, averaged
    over samples, times T²."""
    student, teacher = _fp32(student, teacher)
    target = torch.sigmoid(teacher / temperature)
    cross = F.binary_cross_entropy_with_logits(student / temperature, target, reduction="sum")
    entropy = F.binary_cross_entropy_with_logits(teacher / temperature, target, reduction="sum")
    return (cross - entropy) / len(student) * temperature**2


def mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element (maps, embeddings, regression outputs)."""
    student, teacher = _fp32(student, teacher)
    return F.mse_loss(student, teacher)


def cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of each sample's flattened output, averaged over samples."""
    student, teacher = _fp32(student, teacher)
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1, eps=1e-12)).mean()


def hint(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Feature hint: squared distance of the per-sample L2-normalised features, averaged over samples.

    Normalising makes the loss independent of the features' scale (a layer's activations can be in
    the thousands or the thousandths) without an adapter: it equals 2 - 2·cosine, in [0, 4].
    """
    student, teacher = _fp32(student, teacher)
    s = F.normalize(student.flatten(1), dim=1, eps=1e-12)
    t = F.normalize(teacher.flatten(1), dim=1, eps=1e-12)
    return (s - t).square().sum(dim=1).mean()


def output_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                class_axis: int = 1) -> torch.Tensor:
    """The loss named ``kind`` ("kl", "mse" or "cosine"; "binary_kl" for a detector's class logits) between one
    student and teacher output."""
    if kind == "kl":
        return kd_kl(student, teacher, temperature, class_axis)
    if kind == "binary_kl":
        return binary_kl(student, teacher, temperature)
    if kind == "mse":
        return mse(student, teacher)
    if kind == "cosine":
        return cosine(student, teacher)
    raise ValueError(f"unknown loss {kind!r}")
