"""What a model expects as input: names, dtypes and (possibly symbolic) shapes of its graph inputs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import onnx
from onnx import helper

from onnxkd.data.batch_axes import input_batch_axes
from onnxkd.data.index_ranges import index_ranges
from onnxkd.errors import OnnxkdError

Dim = Union[int, str, None]  # int = fixed, str = symbolic (dim_param), None = unknown
ShapeOverrides = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]  # as the model declares it
    # Where the model takes its samples: 0, or 1 for a seq-first export (x[T, batch, C] -> y[batch, K]). Data holds
    # samples on axis 0 whatever the model does; they are moved to this axis as they enter it (``batch_axes``).
    batch_axis: int = 0
    # Rows of the table the input's integer values index (token ids into an embedding): valid values are
    # [-rows, rows); None when it indexes no constant table (``index_ranges``).
    index_range: int | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def fixed_batch(self) -> int | None:
        """The batch dim when the model fixes it (e.g. exported with batch 1), else None."""
        dim = self.shape[self.batch_axis] if self.shape else None
        return dim if isinstance(dim, int) else None

    @property
    def sample_dims(self) -> tuple[Dim, ...]:
        """The model's dims of one sample: its shape without the batch axis (what data holds after axis 0)."""
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    def with_batch(self, sample: Sequence[int], batch: int) -> tuple[int, ...]:
        """A model shape: ``sample`` dims with ``batch`` at the batch axis."""
        return (*sample[:self.batch_axis], batch, *sample[self.batch_axis:])

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are fed at run time (old exporters also list initializers as inputs), each with the axis
    that holds its samples (``input_batch_axes``)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    specs = []
    for value in graph.input:
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
    axes = input_batch_axes({spec.name: spec.shape for spec in specs}, _output_first_dims(graph))
    ranges = index_ranges(graph) if any(spec.dtype.kind in "iu" for spec in specs) else {}
    return [replace(spec, batch_axis=axes.get(spec.name, 0), index_range=ranges.get(spec.name)) for spec in specs]


def batch_axes(specs: list[InputSpec]) -> dict[str, int]:
    """Input name -> batch axis, for the inputs that do not take their samples on axis 0."""
    return {spec.name: spec.batch_axis for spec in specs if spec.batch_axis}


def _output_first_dims(graph: onnx.GraphProto) -> list[Dim]:
    firsts: list[Dim] = []
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        firsts.append(dims[0].dim_param or None if dims else None)
    return firsts


def seq_first_note(specs: list[InputSpec]) -> str | None:
    """What ``inspect`` says about inputs whose samples are not on axis 0, or None."""
    moved = [spec for spec in specs if spec.batch_axis]
    if not moved:
        return None
    shown = ", ".join(f"{spec.name!r} ({spec.describe()}, axis {spec.batch_axis})" for spec in moved)
    return (f"seq-first input(s) {shown}: data gives samples on axis 0 (x[N, T, C]), and onnxkd moves them to the "
            "model's batch axis as they enter it")


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


def shape_overrides(given: ShapeOverrides | str | Iterable[str] | None) -> ShapeOverrides | None:
    """Input shapes as a Python caller gives them: a mapping, or the flag's ``"x=1,3,8,8"``, alone or in a list
    (a lone string was read character by character)."""
    if given is None or isinstance(given, Mapping):
        return given
    return parse_input_shapes([given] if isinstance(given, str) else given)


def check_input_shapes(overrides: ShapeOverrides | None, specs: list[InputSpec]) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` checked against the model before any work: every name an input, every shape of the
    input's rank and equal to the dims the model fixes. Returns the shapes as tuples."""
    names = [s.name for s in specs]
    checked = {}
    for name, shape in (overrides or {}).items():
        spec = next((s for s in specs if s.name == name), None)
        if spec is None:
            raise OnnxkdError(f"--input-shape {name}=...: the model has no input {name!r}; its inputs are "
                              + ", ".join(map(repr, names)))
        shape = tuple(int(d) for d in shape)
        if len(shape) != spec.rank:
            raise OnnxkdError(f"--input-shape {name}={_dims(shape)}: rank {len(shape)}, the model's input is "
                              f"{spec.describe()} (rank {spec.rank})")
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and want != got:
                raise OnnxkdError(f"--input-shape {name}={_dims(shape)}: dim {axis} is {got}, the model fixes it "
                                  f"to {want} ({spec.describe()})")
        checked[name] = shape
    return checked


def reference_shapes(specs: list[InputSpec], overrides: ShapeOverrides | None = None,
                     sample_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """One concrete batch-1 shape per input, wherever a stage needs sizes (MACs, equivalence checks, timing):
    ``--input-shape`` first, then the shape of the user's samples (``sample_shapes``: name -> shape without
    the sample axis), then the dims the model fixes; a free batch dim is 1. A dynamic dim that none of these
    fixes is an input error that names it and shows the flag to give."""
    overrides = check_input_shapes(overrides, specs)
    shapes = {}
    for spec in specs:
        if spec.name in overrides:
            shapes[spec.name] = overrides[spec.name]
        elif sample_shapes is not None and spec.name in sample_shapes:
            shapes[spec.name] = spec.with_batch([int(d) for d in sample_shapes[spec.name]], spec.fixed_batch or 1)
        else:
            shapes[spec.name] = concrete_shape(spec)
    return shapes


def concrete_shape(spec: InputSpec, overrides: ShapeOverrides | None = None, batch: int | None = None) -> tuple[int, ...]:
    """A runnable shape: ``--input-shape`` first, then fixed dims; a free batch dim becomes ``batch`` (1)."""
    override = (overrides or {}).get(spec.name)
    if override is not None:
        shape = list(check_input_shapes({spec.name: override}, [spec])[spec.name])
    else:
        free = [axis for axis, dim in enumerate(spec.shape) if axis != spec.batch_axis and not isinstance(dim, int)]
        if free:
            raise OnnxkdError(missing_dims_message(spec, free))
        shape = [dim if isinstance(dim, int) else 1 for dim in spec.shape]
    if batch is not None and shape and spec.fixed_batch is None:
        shape[spec.batch_axis] = batch
    return tuple(shape)


# An example size for a dynamic dim in the error below: a common image side, and a common sequence length.
EXAMPLE_DIM = 224


def missing_dims_message(spec: InputSpec, free: list[int]) -> str:
    """Names the dynamic dims nothing fixes and gives the flag, built from the model's own input."""
    which = "dims " + ", ".join(map(str, free)) if len(free) > 1 else f"dim {free[0]}"
    example = [d if isinstance(d, int) else 1 if axis == spec.batch_axis else EXAMPLE_DIM
               for axis, d in enumerate(spec.shape)]
    return (f"input {spec.name!r} has dynamic {which} ({spec.describe()}) and no data gives their sizes; give "
            f"--data, or the sizes with --input-shape {spec.name}={_dims(example)} (your model's real sizes)")


def _dims(shape: Sequence) -> str:
    return ",".join(str(d) for d in shape)
