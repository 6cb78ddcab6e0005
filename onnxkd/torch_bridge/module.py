"""``OnnxModule``: an nn.Module that IS an ONNX graph.

Every float initializer is an ``nn.Parameter`` keyed by its (sanitised) initializer name; integer and
bool initializers and BatchNormalization running statistics are buffers. A weight shared by two nodes
is one parameter, because parameters are keyed by tensor name, not by node.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence

import onnx_ir as ir
import torch
from torch import nn

from onnxkd import model as model_io
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.program import Program, tensor_from_ir
from onnxkd.torch_bridge.registry import RunState

# Inputs of these ops are statistics, not trainable weights: (op_type, input index).
_STATISTIC_INPUTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


class OnnxModule(nn.Module):
    """Run with ``module(*inputs)`` (graph-input order) -> tuple of outputs (graph-output order).

    ``module(*inputs, capture=["t1", "t2"])`` returns ``(outputs, {"t1": tensor, "t2": tensor})``
    for any intermediate tensor named in the graph.
    """

    def __init__(self, model: ir.Model):
        super().__init__()
        self.params = nn.ParameterDict()
        self.consts = _BufferDict()
        self.onnx_to_key: dict[str, str] = {}  # initializer name -> key in params/consts
        self._state = RunState()
        graph = model.graph
        initializers = _all_initializers(graph)
        statistics = _statistic_names(graph)
        taken: set[str] = set()
        for name, value in initializers.items():
            key = _sanitize(name, taken)
            tensor = tensor_from_ir(value.const_value)
            trainable = isinstance(tensor, torch.Tensor) and tensor.dtype in dtypes.FLOAT_TYPES and name not in statistics
            if trainable:
                self.params[key] = nn.Parameter(tensor)
            else:
                self.consts.add(key, tensor)
            self.onnx_to_key[name] = key
        opsets = {("" if d in ("", "ai.onnx") else d): v for d, v in model.opset_imports.items()}
        self.program = Program(graph, opsets, self._state, set(initializers))
        self.input_names = list(self.program.input_names)
        self.output_names = list(self.program.output_names)

    # ------------------------------------------------------------------ running

    def forward(self, *inputs: torch.Tensor, capture: Sequence[str] | None = None):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        self._state.training = self.training
        self._state.device = inputs[0].device if inputs and isinstance(inputs[0], torch.Tensor) else _first_device(self)
        env = self._initial_env()
        env.update(zip(self.input_names, inputs))
        captured = None
        if capture is not None:
            captured = dict.fromkeys(capture)
            for name in capture:
                if name in env:
                    captured[name] = env[name]
        outputs = tuple(self.program.run(env, captured))
        if capture is None:
            return outputs
        missing = [name for name, value in captured.items() if value is None]
        if missing:
            raise KeyError(f"no tensor named {', '.join(missing)} in the graph")
        return outputs, captured

    def _initial_env(self) -> dict[str, torch.Tensor]:
        env = {}
        params, consts = self.params, self.consts
        for name, key in self.onnx_to_key.items():
            env[name] = params[key] if key in params else consts[key]
        return env

    # ------------------------------------------------------------------ naming

    def onnx_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(initializer name, parameter or buffer) for every initializer, in graph order."""
        for name, key in self.onnx_to_key.items():
            yield name, self.params[key] if key in self.params else self.consts[key]

    def onnx_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(initializer name, parameter) for every trainable initializer."""
        for name, key in self.onnx_to_key.items():
            if key in self.params:
                yield name, self.params[key]

    def parameter(self, onnx_name: str) -> nn.Parameter:
        return self.params[self.onnx_to_key[onnx_name]]


class _BufferDict(nn.Module):
    """Buffers keyed like ParameterDict (moved by .to(), saved in state_dict, never trained)."""

    def add(self, key: str, tensor) -> None:
        if isinstance(tensor, torch.Tensor):
            self.register_buffer(key, tensor)
        else:  # string tensors: plain attribute, not a buffer
            object.__setattr__(self, key, tensor)

    def __getitem__(self, key: str):
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)


def to_torch(model: model_io.ModelLike) -> OnnxModule:
    """The ONNX model as a trainable ``OnnxModule`` (raises UnsupportedOpError naming the first unsupported node)."""
    return OnnxModule(model_io.load(model))


def _sanitize(name: str, taken: set[str]) -> str:
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "t"
    if key[0].isdigit():
        key = "t_" + key
    base, counter = key, 1
    while key in taken:
        counter += 1
        key = f"{base}_{counter}"
    taken.add(key)
    return key


def _all_initializers(graph: ir.Graph) -> dict[str, ir.Value]:
    """Initializers of the graph and of its subgraphs (If/Loop bodies may carry their own)."""
    found: dict[str, ir.Value] = {}
    for g in _graphs(graph):
        for name, value in g.initializers.items():
            if value.const_value is not None:
                found.setdefault(name, value)
    return found


def _graphs(graph: ir.Graph) -> Iterable[ir.Graph]:
    yield graph
    for node in graph:
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from _graphs(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.value:
                    yield from _graphs(sub)


def _statistic_names(graph: ir.Graph) -> set[str]:
    names = set()
    for g in _graphs(graph):
        for node in g:
            for index, value in enumerate(node.inputs):
                if value is not None and (node.op_type, index) in _STATISTIC_INPUTS:
                    names.add(value.name)
    return names


def _first_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
