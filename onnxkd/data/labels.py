"""Which class-score output labels belong to, when a model has several outputs shaped [N, C].

A model may return an embedding ([N, 128]) next to its logits ([N, 10]), in any order: both look like class
scores. Labels name classes of one of them: the one on which the (trained) reference model agrees with the
labels most. Taking the first instead trained an embedding with cross-entropy and measured accuracy on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxkd.errors import OnnxkdError


def labelled_output(scores: Sequence[np.ndarray], labels: np.ndarray | None) -> int | None:
    """Index into ``scores`` (candidate [N, C] outputs of the reference model, on the samples ``labels`` name) of
    the one with the highest top-1 accuracy among those with a score per label; the first when there are no
    labels, or when none has a score per label (the caller's label check names the problem); None when there is no
    candidate."""
    if not len(scores):
        return None
    if labels is None or not len(labels):
        return 0
    labels = np.asarray(labels)
    fitting = [i for i, s in enumerate(scores) if s.shape[1] > int(labels.max())]
    if not fitting:
        return 0
    return max(fitting, key=lambda i: (float(np.mean(np.argmax(scores[i], axis=1) == labels)), -i))


def check_labels_fit(labels: np.ndarray | None, scores: np.ndarray, output: str, source: str | None = None) -> None:
    """Refuse labels naming a class the chosen score output has no score for: accuracy on them would be 0 for
    every model, and a budget or gate on it would pass whatever the model does. ``source``: the data's file,
    named first (compress reads two)."""
    if labels is not None and len(labels) and int(np.max(labels)) >= scores.shape[1]:
        raise OnnxkdError(f"{source + ': ' if source else ''}labels: class id {int(np.max(labels))} >= the "
                          f"{scores.shape[1]} scores of output {output!r}")
