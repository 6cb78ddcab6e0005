"""Teacher-vs-student quality metrics: pure numpy, on outputs already computed for the whole data set."""

from __future__ import annotations

import numpy as np

from onnxkd.graph_passes.analyze.output_parts import OutputParts
from onnxkd.validate.bootstrap import mean_ci


def is_class_scores(output: np.ndarray) -> bool:
    """[N, C] with C > 1 reads as class scores (logits or probabilities)."""
    return output.ndim == 2 and output.shape[1] > 1


def top1(scores: np.ndarray) -> np.ndarray:
    """Each row's class over the last axis; -1 (no class) for a row holding a NaN. numpy's argmax takes the
    first NaN for the maximum, so a student that outputs only NaN read as predicting class 0: right on every
    sample of class 0, and through a loose gate."""
    classes = np.argmax(scores, axis=-1)
    if scores.dtype.kind == "f":
        classes = np.where(np.isnan(scores).any(axis=-1), -1, classes)
    return classes


def agreeing(teacher_classes: np.ndarray, student_classes: np.ndarray) -> np.ndarray:
    """Where the two classes agree; a row without a class (NaN: -1) agrees with nothing, not even another."""
    return (teacher_classes == student_classes) & (teacher_classes >= 0)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of an output: itself where it already is one (every row >= 0 and summing to 1: a
    Softmax output, which a second softmax would flatten towards uniform), else its softmax (logits)."""
    scores = scores.astype(np.float64)
    if scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3):
        return scores / scores.sum(axis=-1, keepdims=True)
    return softmax(scores)


def kl_divergence(teacher: np.ndarray, student: np.ndarray) -> float:
    """Mean over samples of KL(p_teacher || p_student) in nats, p the output's ``probabilities``: the
    distillation loss's view."""
    p = probabilities(teacher)
    log_p = np.log(np.clip(p, 1e-300, None))
    log_q = np.log(np.clip(probabilities(student), 1e-300, None))
    return float(np.mean(np.sum(p * (log_p - log_q), axis=-1)))


def cosine(teacher: np.ndarray, student: np.ndarray) -> float:
    """Cosine similarity of the whole output, flattened (1.0 = same direction)."""
    a, b = teacher.astype(np.float64).ravel(), student.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / denom)


def relative_error(teacher: np.ndarray, student: np.ndarray) -> float:
    """||student - teacher|| / ||teacher|| (L2 over every element)."""
    t = teacher.astype(np.float64).ravel()
    return float(np.linalg.norm(student.astype(np.float64).ravel() - t) / max(np.linalg.norm(t), 1e-12))


def part_slices(ndim: int, parts: OutputParts | None) -> list[tuple[slice, ...]]:
    """Index tuples selecting each part of an output (``output_parts``), or the whole output without parts."""
    if parts is None:
        return [(slice(None),)]
    before = (slice(None),) * parts.axis
    return [before + (slice(p.start, p.stop),) for p in parts.parts]


def parts_metrics(teacher: np.ndarray, student: np.ndarray, parts: OutputParts) -> list[dict]:
    """An output whose parts hold values of different kinds (a detector's boxes next to its scores): each part's
    agreement, since the whole output's is the largest part's alone."""
    found = []
    for part, piece in zip(parts.parts, part_slices(teacher.ndim, parts)):
        t, s = teacher[piece], student[piece]
        finite = np.isfinite(t) & np.isfinite(s)
        figures = output_metrics(part.label, t, s)
        found.append(dict(part.to_dict(), axis=parts.axis, label=part.label,
                          **{k: figures[k] for k in ("max_abs_error", "mean_abs_error", "cosine")},
                          relative_error=relative_error(np.where(finite, t, 0), np.where(finite, s, 0))))
    return found


def output_metrics(name: str, teacher: np.ndarray, student: np.ndarray) -> dict:
    finite = np.isfinite(teacher) & np.isfinite(student) if teacher.dtype.kind == "f" else np.ones(teacher.shape, bool)
    diff = np.abs(teacher.astype(np.float64) - student.astype(np.float64))[finite]
    metrics = {
        "name": name,
        "shape": list(teacher.shape),
        "max_abs_error": float(diff.max()) if diff.size else None,
        "mean_abs_error": float(diff.mean()) if diff.size else None,
        "cosine": cosine(np.where(finite, teacher, 0), np.where(finite, student, 0)),
        "kl": None,
        "top1_agreement": None,
        "teacher_nonfinite": nonfinite(teacher),
        "student_nonfinite": nonfinite(student),
    }
    if teacher.dtype.kind == "f" and (np.isfinite(teacher) & ~np.isfinite(student)).any():
        # the student is NaN/Inf where the teacher is not: errors over the rest would read as a perfect match
        metrics.update(max_abs_error=None, mean_abs_error=None, cosine=None)
    if is_class_scores(teacher) and teacher.dtype.kind == "f":
        metrics["top1_agreement"] = float(np.mean(agreeing(top1(teacher), top1(student))))
        if finite.all():
            metrics["kl"] = kl_divergence(teacher, student)
    return metrics


def data_shaped_metrics(name: str, op: str, teacher: np.ndarray, student: np.ndarray) -> dict:
    """An output whose shape follows its data (the boxes NonMaxSuppression keeps): the models keep different
    rows, and no row belongs to one sample, so only the row counts are compared."""
    return {"name": name, "shape": list(teacher.shape), "data_shaped": op,
            "rows": {"teacher": int(teacher.shape[0]), "student": int(student.shape[0])},
            "max_abs_error": None, "mean_abs_error": None, "cosine": None, "kl": None, "top1_agreement": None,
            "teacher_nonfinite": nonfinite(teacher), "student_nonfinite": nonfinite(student)}


def class_id_metrics(name: str, teacher: np.ndarray, student: np.ndarray) -> dict:
    """An output of class ids (an ArgMax: one per sample, or per pixel of a segmentation map): the share of
    ids that agree; differences of ids mean nothing."""
    metrics = output_metrics(name, teacher, student)
    metrics.update(max_abs_error=None, mean_abs_error=None, cosine=None, class_ids=True,
                   top1_agreement=float(np.mean(teacher == student)))
    return metrics


def token_score_metrics(name: str, teacher: np.ndarray, student: np.ndarray) -> dict:
    """An output of class scores per position, [N, T, C] (a language model's or a tagger's logits, a CTC
    recognizer's log-probabilities): top-1 agreement and KL per token, over every position of every sample."""
    metrics = output_metrics(name, teacher, student)
    metrics["per_token"] = True
    if teacher.dtype.kind == "f" and teacher.shape[-1] > 1:
        metrics["top1_agreement"] = float(np.mean(agreeing(top1(teacher), top1(student))))
        if np.isfinite(teacher).all() and np.isfinite(student).all():
            classes = teacher.shape[-1]
            metrics["kl"] = kl_divergence(teacher.reshape(-1, classes), student.reshape(-1, classes))
    return metrics


def nonfinite(array: np.ndarray) -> dict:
    if array.dtype.kind != "f":
        return {"nan": 0, "inf": 0}
    return {"nan": int(np.isnan(array).sum()), "inf": int(np.isinf(array).sum())}


def predicted_classes(output: np.ndarray, class_ids: bool = False) -> np.ndarray:
    """Each sample's class: the top-1 of class scores [N, C], or an output of class ids ([N] or [N, 1])."""
    return output.reshape(len(output), -1)[:, 0].astype(np.int64) if class_ids else top1(output)


def accuracy_comparison(teacher: np.ndarray, student: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Accuracies and the drop (teacher - student) with a paired bootstrap CI: same samples for both models.
    ``teacher``/``student``: each sample's predicted class (``predicted_classes``)."""
    correct_t = (teacher == labels).astype(np.float64)
    correct_s = (student == labels).astype(np.float64)
    drop = correct_t - correct_s
    return {
        "teacher": float(correct_t.mean()),
        "student": float(correct_s.mean()),
        "drop": float(drop.mean()),
        "drop_ci95": mean_ci(drop, seed),
        "n": int(len(labels)),
    }


def agreement(teacher: np.ndarray, student: np.ndarray, seed: int = 0) -> dict:
    """Top-1 agreement of each sample's predicted classes (``predicted_classes``), with a bootstrap CI."""
    same = agreeing(teacher, student).astype(np.float64)
    return {"top1": float(same.mean()), "top1_ci95": mean_ci(same, seed), "n": int(len(same))}
