"""A model PTQ ruins and a user could meet: the digits CNN with one channel of its first convolution scaled up by
``factor`` and the next convolution's weights for that channel scaled down by as much.

ReLU is positively homogeneous, so the function is unchanged (checked by onnxruntime in the tests), but the
first activation's range grows ``factor`` times: with one int8 scale for the whole tensor its other channels
round to a few levels. Cross-layer equalisation undoes such models; int8 without it loses accuracy."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

FIRST_WEIGHT, FIRST_BIAS, SECOND_WEIGHT = "onnx::Conv_53", "onnx::Conv_54", "onnx::Conv_56"


def outlier_digits(teacher: Path, out: Path, factor: float) -> Path:
    model = onnx.load(str(teacher))
    tensors = {t.name: t for t in model.graph.initializer}

    def edit(name: str, change) -> None:
        array = numpy_helper.to_array(tensors[name]).copy()
        change(array)
        tensors[name].CopyFrom(numpy_helper.from_array(array, name))

    edit(FIRST_WEIGHT, lambda w: w.__setitem__(0, w[0] * factor))
    edit(FIRST_BIAS, lambda b: b.__setitem__(0, b[0] * factor))
    edit(SECOND_WEIGHT, lambda w: w.__setitem__((slice(None), 0), w[:, 0] / factor))
    onnx.save(model, str(out))
    return out
