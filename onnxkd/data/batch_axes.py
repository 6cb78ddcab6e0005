"""Which axis of a model's tensors holds the samples. onnxkd holds them on axis 0 (every data source, batch, cache
and result), but a model need not: a seq-first export takes x[time, batch, C] (torch's LSTM and Transformer
layers by default), and a CTC recognizer exported the way torch's CTC loss wants its input returns
log-probabilities [time, batch, classes]. Inputs are moved to the model's axis as they enter it, outputs back to
axis 0 as they leave it. An input's axis is read from the declared shapes (``input_batch_axes``), an output's from
its shapes at batch 1 and 2: the one axis that grew from 1 to 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeVar, Union

import numpy as np

Key = TypeVar("Key")
Dim = Union[int, str, None]


# What exporters call a batch dim: torch.export.Dim("batch"), dynamic_axes={"x": {1: "batch_size"}}.
BATCH_NAME = re.compile(r"^batch(_?size)?$", re.IGNORECASE)


def input_batch_axes(inputs: Mapping[str, Sequence[Dim]], output_firsts: Sequence[Dim]) -> dict[str, int]:
    """Input name -> its batch axis, for the inputs whose batch is not axis 0, from the declared shapes
    (``output_firsts``: axis 0 of each graph output). Two signs of a seq-first export:

    - x[T, batch, C] -> y[batch, K]: every output's axis 0 is one symbol that is a later axis of the input and
      not its axis 0, which is not 1 (a fixed batch of 1 with an output squeezed to [seq, ...] is read as it is);
    - otherwise, x[T, batch, C] -> y[T, batch, K] (a tagger, a CTC model fed seq-first): the one later axis of
      the input named as a batch (``BATCH_NAME``). Without either, axis 0 is read as the batch."""
    symbols = {d for d in output_firsts if isinstance(d, str)}
    if len(symbols) == 1 and all(isinstance(d, str) for d in output_firsts):
        [batch] = symbols
        found = {name: list(shape).index(batch) for name, shape in inputs.items()
                 if shape and shape[0] not in (1, batch) and batch in shape[1:]}
        if found:
            return found
    return {name: axis for name, shape in inputs.items() if (axis := _named_batch_axis(shape))}


def _named_batch_axis(shape: Sequence[Dim]) -> int | None:
    named = [axis for axis, dim in enumerate(shape) if isinstance(dim, str) and BATCH_NAME.match(dim)]
    return named[0] if len(named) == 1 and named[0] > 0 else None


def declared_batch_axes(graph) -> dict[str, int]:
    """``input_batch_axes`` of an onnx-ir graph's declared shapes."""
    def dims(value) -> list:
        return [d if isinstance(d, int) else d.value for d in value.shape] if value.shape is not None else []

    return input_batch_axes({value.name: dims(value) for value in graph.inputs},
                            [(dims(value) or [None])[0] for value in graph.outputs])


def into_model(feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Numpy feeds with their samples on axis 0, as the model takes them (contiguous: onnxruntime would copy a
    strided view on every run)."""
    return {name: np.ascontiguousarray(np.moveaxis(value, 0, axes[name])) if name in axes else value
            for name, value in feeds.items()}


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
