"""Which axis of a model's output holds the samples. Inputs hold them on axis 0 (the data contract), but outputs
need not: a CTC recognizer exported the way torch's CTC loss wants its input returns log-probabilities
[time, batch, classes]. Found from the tensor's shapes at batch 1 and 2: the one axis that grew from 1 to 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

Key = TypeVar("Key")


def batch_axis(at_one: Sequence[int], at_two: Sequence[int]) -> int | None:
    """The axis that grew from 1 to 2 samples, every other dim staying; None where no single axis did (a tensor
    without a per-sample axis, or rows that follow the data, such as the boxes a NonMaxSuppression keeps)."""
    if len(at_one) != len(at_two):
        return None
    grown = [axis for axis, (a, b) in enumerate(zip(at_one, at_two)) if a != b]
    if len(grown) == 1 and at_one[grown[0]] == 1 and at_two[grown[0]] == 2:
        return grown[0]
    return None


def moved(axes: Mapping[Key, int | None]) -> dict[Key, int]:
    """Tensor (by position or name) -> batch axis, for the tensors whose samples are not on axis 0 (what needs
    moving)."""
    return {key: axis for key, axis in axes.items() if axis not in (None, 0)}
