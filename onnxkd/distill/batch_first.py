"""Distillation holds every tensor with its samples on axis 0: the teacher cache stores rows by sample index, and
validation and labels read them so. A model output with its samples on another axis ([time, batch, classes]: a CTC
recognizer's log-probabilities, as torch's CTC loss takes them) is moved there as it leaves the module; the graph
written is not changed."""

from __future__ import annotations

from collections.abc import Callable

import torch

from onnxkd.data.batch_axes import batch_axis, moved
from onnxkd.torch_bridge import OnnxModule

Run = Callable[[OnnxModule, list, list], tuple]  # (module, inputs, capture) -> (outputs, captured)


def run_entering(module: OnnxModule, inputs: list[torch.Tensor], capture: list[str]) -> tuple:
    """The plain ``Run``: ``module`` on samples-first ``inputs``, moved to the axes its graph takes them on."""
    return module(*module.samples_entering(inputs), capture=capture)


def batch_axes(module: OnnxModule, inputs: list[torch.Tensor], tensors: list[str], run: Run) -> dict[str, int]:
    """Tensor name -> the axis holding its samples, for the ``tensors`` (outputs or inside) that do not hold them on
    axis 0: from their shapes when ``module`` runs the first one and the first two samples of ``inputs``."""
    if inputs[0].shape[0] < 2:
        return {}
    capture = [name for name in tensors if name not in module.output_names]
    shapes = []
    for n in (1, 2):
        with torch.no_grad():
            outputs, captured = run(module, [x[:n] for x in inputs], capture)
        values = {**dict(zip(module.output_names, outputs)), **captured}
        shapes.append({name: tuple(values[name].shape) for name in tensors if name in values})
    return moved({name: batch_axis(shapes[0][name], shapes[1][name]) for name in shapes[0]})


def batch_first(run: Run, output_names: list[str], axes: dict[str, int]) -> Run:
    """``run``, with the outputs and captured tensors named in ``axes`` returned with their samples on axis 0."""
    if not axes:
        return run

    def moved(module, inputs, capture):
        outputs, captured = run(module, inputs, capture)
        outputs = tuple(t.movedim(axes[name], 0) if name in axes else t for name, t in zip(output_names, outputs))
        return outputs, {name: t.movedim(axes[name], 0) if name in axes else t for name, t in captured.items()}

    return moved
