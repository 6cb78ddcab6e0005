"""The model's first run on the data, with onnxruntime as the judge where the bridge fails.

An export can fix a traced size in a Reshape (the legacy exporter's nn.TransformerEncoder, a dynamo seq-first
LSTM) while its input still says the dim is dynamic: data of another length then fails inside the graph, and the
bridge raised torch's RuntimeError, an internal error (exit 3), where validate says in one line that the model
does not run on the data (exit 2). When the bridge fails, onnxruntime runs the same samples: if it fails too, the
data does not fit the model, said so; if it runs, the failure is the bridge's own, raised as it is.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import onnx_ir as ir
import torch

from onnxkd import model as model_io
from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import OnnxModule

T = TypeVar("T")


def first_run_on_data(module: OnnxModule, model: ir.Model, inputs: list[torch.Tensor], label: str,
                      first_run: Callable[[], T]) -> T:
    """``first_run()``; where it fails, the data is tried on onnxruntime (``inputs``: samples on axis 0)."""
    try:
        return first_run()
    except RuntimeError:
        failure = _onnxruntime_failure(module, model, [x[:1] for x in inputs])
        if failure is None:
            raise
        shapes = ", ".join(f"{name} {list(x.shape[1:])}" for name, x in zip(module.input_names, inputs))
        raise OnnxkdError(f"{label} does not run on the data's samples ({shapes}): onnxruntime fails too "
                          f"({failure}); an export can fix a traced size in a Reshape: give data of the size it "
                          "was exported at, or export it again at the data's size") from None


def _onnxruntime_failure(module: OnnxModule, model: ir.Model, inputs: list[torch.Tensor]) -> str | None:
    feeds = {name: x.detach().cpu().numpy() for name, x in zip(module.input_names, module.samples_entering(inputs))}
    return model_io.onnxruntime_failure(model, feeds)
