"""Random inputs of the model's input shapes, for latency and static figures when there is no ``--data``."""

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
        else:  # small non-negative ints are valid indices for embeddings/gathers of any size
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
    return feeds
