"""What a model expects as input: names, dtypes and (possibly symbolic) shapes of its graph inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import onnx
from onnx import helper

from onnxkd.errors import OnnxkdError

Dim = Union[int, str, None]  # int = fixed, str = symbolic (dim_param), None = unknown
ShapeOverrides = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def fixed_batch(self) -> int | None:
        """Dim 0 when the model fixes it (e.g. exported with batch 1), else None."""
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are fed at run time (old exporters also list initializers as inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise OnnxkdError(f"input {value.name!r}: only tensor inputs are supported")
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs


def parse_input_shapes(items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,224,224"]`` -> ``{"x": (1, 3, 224, 224)}`` (the ``--input-shape`` flag)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
            if not shape or min(shape) < 1:
                raise ValueError
        except ValueError:
            raise OnnxkdError(f"--input-shape {item!r}: expected NAME=D0,D1,... with positive integers") from None
        shapes[name] = shape
    return shapes


def concrete_shape(spec: InputSpec, overrides: ShapeOverrides | None = None, batch: int | None = None) -> tuple[int, ...]:
    """A runnable shape: ``--input-shape`` first, then fixed dims; a free batch dim becomes ``batch`` (1)."""
    override = (overrides or {}).get(spec.name)
    if override is not None:
        override = tuple(int(d) for d in override)
        if len(override) != spec.rank:
            raise OnnxkdError(
                f"input {spec.name!r}: --input-shape has rank {len(override)}, model expects {spec.describe()}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, override)):
            if isinstance(want, int) and want != got:
                raise OnnxkdError(
                    f"input {spec.name!r}: --input-shape dim {axis} is {got}, model fixes it to {want} ({spec.describe()})"
                )
        shape = list(override)
    else:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                raise OnnxkdError(
                    f"input {spec.name!r} has dynamic dim {axis} ({spec.describe()}); "
                    f"fix it with --input-shape {spec.name}=" + ",".join("1" if i == 0 else "N" for i in range(spec.rank))
                )
    if batch is not None and shape and spec.fixed_batch is None:
        shape[0] = batch
    return tuple(shape)
