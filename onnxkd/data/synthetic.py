"""Random inputs of the model's input shapes, for latency and static figures when there is no ``--data``: like any
data, with their samples on axis 0 (a seq-first input's batch is moved there)."""

from __future__ import annotations

import numpy as np

from onnxkd.data.spec import InputSpec, ShapeOverrides, concrete_shape


def random_inputs(specs: list[InputSpec], overrides: ShapeOverrides | None = None, batch: int | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, overrides, batch)
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:  # ids over the table they index (every token of the vocabulary); else 0/1, valid for any use (masks)
            feeds[spec.name] = rng.integers(0, spec.index_range or 2, size=shape).astype(spec.dtype)
        if spec.batch_axis:
            feeds[spec.name] = np.ascontiguousarray(np.moveaxis(feeds[spec.name], spec.batch_axis, 0))
    return feeds
