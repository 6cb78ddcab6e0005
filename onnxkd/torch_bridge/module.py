"""``OnnxModule``: an nn.Module that IS an ONNX graph.

Every float initializer with at least one dimension is an ``nn.Parameter`` keyed by its (sanitised)
initializer name; integer and bool initializers, 0-d (scalar) initializers, BatchNormalization running
statistics and tensors only read as scales or bounds are buffers. A weight shared by two nodes
is one parameter, because parameters are keyed by tensor name, not by node (an Identity in front of a
weight, as the legacy torch exporter writes for shared weights, passes the same parameter through).

Weights some exporters keep in Constant nodes or behind ``ConstantOfShape(shape initializer)`` are
folded at conversion time and treated like initializers of the same name (scalar Constants stay
buffers: they are arithmetic, not weights); ``write_back`` turns those it changed into initializers.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from onnxkd import model as model_io
from onnxkd.data.batch_axes import declared_batch_axes
from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.fixed_batch import declared_batch, run_in_chunks
from onnxkd.torch_bridge.program import Program, tensor_from_ir
from onnxkd.torch_bridge.registry import RunState, normalize_domain

# Float inputs read as constants, never trained: running statistics, resize scales, clip bounds.
# A float tensor used only at such (op_type, input index) slots is a buffer, not a parameter.
_NON_TRAINABLE_INPUTS = {
    ("BatchNormalization", 3), ("BatchNormalization", 4),
    ("Resize", 1), ("Resize", 2), ("Upsample", 1),
    ("Clip", 1), ("Clip", 2), ("Dropout", 1),
    ("Range", 0), ("Range", 1), ("Range", 2),
    # quantization scales: Adam's steps are far too large for them (a scale of 0.004 moved 1e-3 a step);
    # quantization-aware training learns them as log-scales through an Exp node instead (quantize/trainable.py)
    ("QuantizeLinear", 1), ("DequantizeLinear", 1),
}
# Inputs that an op updates in place (train-mode running statistics).
_MUTATED_INPUTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


class OnnxModule(nn.Module):
    """Run with ``module(*inputs)`` (graph-input order) -> tuple of outputs (graph-output order).

    ``module(*inputs, capture=["t1", "t2"])`` returns ``(outputs, {"t1": tensor, "t2": tensor})``
    for any intermediate tensor named in the graph.
    """

    def __init__(self, model: ir.Model, frozen: bool = False):
        super().__init__()
        self.frozen = frozen
        self.params = nn.ParameterDict()
        self.consts = _BufferDict()
        self.onnx_to_key: dict[str, str] = {}  # initializer name -> key in params/consts
        self.folded: dict[str, str] = {}  # tensor name -> op_type of the Constant/ConstantOfShape node folded into it
        self._state = RunState()
        graph = model.graph
        initializers = _all_initializers(graph)
        tensors = {name: tensor_from_ir(value.const_value, copy=not frozen) for name, value in initializers.items()}
        for name, (op_type, tensor) in _fold_constants(graph, tensors).items():
            tensors[name] = tensor
            self.folded[name] = op_type
        slots = _constant_slots(graph, set(tensors))
        constants_only = {name for name, used in slots.items() if used <= _NON_TRAINABLE_INPUTS}
        taken: set[str] = set()
        for name, tensor in tensors.items():
            key = _sanitize(name, taken)
            trainable = isinstance(tensor, torch.Tensor) and tensor.dtype in dtypes.FLOAT_TYPES and name not in constants_only
            if trainable and (tensor.dim() == 0 or (name in self.folded and tensor.numel() <= 1)):
                # A 0-d initializer (the dynamo exporter's sqrt(d), -inf mask fill) or a scalar Constant node is
                # arithmetic, not a weight: trained, a -inf would turn into NaN under weight decay.
                trainable = False
            if trainable:
                self.params[key] = nn.Parameter(tensor, requires_grad=not frozen)
            else:
                self.consts.add(key, tensor)
            self.onnx_to_key[name] = key
        self.key_to_onnx = {key: name for name, key in self.onnx_to_key.items()}
        self._param_items = [(name, key) for name, key in self.onnx_to_key.items() if key in self.params]
        self._const_items = [(name, key) for name, key in self.onnx_to_key.items() if key in self.consts._buffers]
        self._other_items = [(name, key) for name, key in self.onnx_to_key.items()
                             if key not in self.params and key not in self.consts._buffers]  # string constants
        # An Identity in front of a constant (the legacy exporter's shared weights) is the same tensor: no step.
        self._aliases = list(_identity_aliases(graph, set(tensors)).items())
        opsets = {("" if d in ("", "ai.onnx") else d): v for d, v in model.opset_imports.items()}
        # Constants no op ever changes (not parameters, not running statistics): shape-only steps may be cached.
        unchanging = {name for name, key in self.onnx_to_key.items()
                      if key not in self.params and not slots.get(name, set()) & _MUTATED_INPUTS}
        unchanging |= {alias for alias, root in self._aliases if root in unchanging}
        weight_shapes = {name: tuple(self.params[key].shape) for name, key in self._param_items}
        weight_shapes.update((alias, weight_shapes[root]) for alias, root in self._aliases if root in weight_shapes)
        scalars = {name: float(tensors[name].reshape(-1)[0]) for name in unchanging
                   if name in tensors and isinstance(tensors[name], torch.Tensor) and tensors[name].is_floating_point()
                   and tensors[name].numel() == 1}
        self.program = Program(graph, opsets, self._state, set(tensors) | {a for a, _ in self._aliases},
                               static_names=unchanging, weight_shapes=weight_shapes, scalars=scalars)
        self.input_names = list(self.program.input_names)
        self.output_names = list(self.program.output_names)
        self.declared_batch = declared_batch(graph)  # None: the graph takes any batch
        # Per input, the axis the graph takes its samples on: 0, or 1 for a seq-first export. The module runs the
        # graph as declared; callers holding samples on axis 0 move them there (``Tensor.movedim(0, axis)``).
        found = declared_batch_axes(graph)
        self.input_batch_axes = [found.get(name, 0) for name in self.input_names]

    def train(self, mode: bool = True) -> OnnxModule:
        """Train mode, refused for a frozen module: it reads the model's own weights (a weights file mapped into
        memory), and train mode would update its BatchNorm statistics in place, which ``write_back`` then ships."""
        if mode and self.frozen:
            raise OnnxkdError("this module was made with to_torch(frozen=True), to be run as the model is (a "
                              "teacher): it cannot train; make it with frozen=False to train it")
        return super().train(mode)

    # ------------------------------------------------------------------ running

    def samples_entering(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``inputs`` held with their samples on axis 0 (onnxkd's batches), moved to the axes the graph takes."""
        return [x.movedim(0, axis) if axis else x for x, axis in zip(inputs, self.input_batch_axes)]

    def forward(self, *inputs: torch.Tensor, capture: Sequence[str] | None = None):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        # numeric numpy arrays, as onnxruntime takes them, run as tensors (string arrays stay as they are)
        inputs = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) and x.dtype.kind not in "OSU" else x
                       for x in inputs)
        batch = self.declared_batch
        if batch is not None and all(isinstance(x, torch.Tensor) and x.dim() > 0 for x in inputs) \
                and len({x.shape[0] for x in inputs}) == 1 and inputs[0].shape[0] != batch:
            return run_in_chunks(lambda chunk, names: self._run(chunk, names), inputs, batch, capture)
        return self._run(inputs, capture)

    def _run(self, inputs: Sequence[torch.Tensor], capture: Sequence[str] | None):
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
        # Cached shape-only values are reused for inputs of the same shapes (not across inference mode: its
        # tensors cannot be saved for backward).
        static_key = tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else None for x in inputs)
        compiling = torch.compiler.is_compiling()
        if not compiling and torch.is_inference_mode_enabled():
            static_key += ("inference",)
        # An empty capture runs like none: intermediates are freed after their last read.
        outputs = tuple(self.program.run(env, captured or None, static_key, compiling))
        if capture is None:
            return outputs
        missing = [name for name, value in captured.items() if value is None]
        if missing:
            raise OnnxkdError(f"capture: no tensor named {', '.join(missing)} in the graph")
        return outputs, captured

    def _initial_env(self) -> dict[str, torch.Tensor]:
        # Looked up on every call: .to() and users replace parameter/buffer objects, so nothing is cached.
        params, buffers = self.params._parameters, self.consts._buffers
        env = {name: params[key] for name, key in self._param_items}
        for name, key in self._const_items:
            env[name] = buffers[key]
        for name, key in self._other_items:
            env[name] = getattr(self.consts, key)
        for alias, root in self._aliases:
            env[alias] = env[root]
        return env

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() replace buffer objects: cached shape-only values may hold the old ones.
        self.program._static_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.program._static_cache.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (f"inputs={self.input_names}, outputs={self.output_names}, steps={len(self.program.steps)}, "
                f"parameters={sum(p.numel() for p in self.params.values()):,}")

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

    def onnx_tensor(self, onnx_name: str) -> torch.Tensor:
        """The parameter or buffer behind an initializer name, or behind an Identity alias of one."""
        root = dict(self._aliases).get(onnx_name, onnx_name)
        key = self.onnx_to_key[root]
        return self.params[key] if key in self.params else self.consts[key]


class _BufferDict(nn.Module):
    """Buffers keyed like ParameterDict (moved by .to(), saved in state_dict, never trained); reads like a dict
    of its keys (``in`` is about them only, not about the module's own attributes)."""

    def __init__(self):
        super().__init__()
        self._keys: list[str] = []

    def add(self, key: str, tensor) -> None:
        if isinstance(tensor, torch.Tensor):
            self.register_buffer(key, tensor)
        else:  # string tensors: plain attribute, not a buffer
            object.__setattr__(self, key, tensor)
        if key not in self._keys:
            self._keys.append(key)

    def __getitem__(self, key: str):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[str]:
        return list(self._keys)

    def items(self) -> list[tuple[str, object]]:
        return [(key, getattr(self, key)) for key in self._keys]


def to_torch(model: model_io.ModelLike, half_as_float32: bool = False, frozen: bool = False) -> OnnxModule:
    """The ONNX model as a trainable ``OnnxModule``, in eval mode (``module.train()`` before training; raises
    UnsupportedOpError naming the first unsupported node).

    ``half_as_float32``: a float16/bfloat16 model computes in float32 (``half.in_float32``), as training and
    scoring need; ``write_back`` still writes the original dtypes.

    ``frozen``: a model that is only run, in eval mode (a teacher): its weights stay where the model holds them
    (a large model's weights file, mapped into memory) instead of being copied, and need no gradient. A 2.4 GB
    teacher took 2.4 GB more of the process's memory. Nothing may write to them (train mode's BatchNorm
    statistics would)."""
    loaded = model_io.load(model)
    if half_as_float32:
        from onnxkd.torch_bridge.half import in_float32

        loaded = in_float32(loaded)
    # in eval mode, as onnxruntime runs the graph: a module in train mode (torch's default) normalised with batch
    # statistics and dropped activations, so the README's first call gave other outputs than onnxruntime
    return OnnxModule(_runnable(loaded), frozen=frozen).eval()


def _runnable(model: ir.Model) -> ir.Model:
    """The model with its local functions inlined and its nodes in topological order (on a copy, if needed).

    Initializer names are unchanged, so ``write_back`` still targets the original graph.
    """
    if not model.functions and model_io.in_topological_order(model.graph):
        return model
    from onnx_ir.passes.common import InlinePass, TopologicalSortPass

    model = model_io.copy_via_proto(model)
    InlinePass()(model)
    TopologicalSortPass()(model)
    return model


def _sanitize(name: str, taken: set[str]) -> str:
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "t"
    if key[0].isdigit():
        key = "t_" + key
    if hasattr(nn.ParameterDict, key) or hasattr(_BufferDict, key):  # "half", "to", "training", ...
        key += "_"
    base, counter = key, 1
    while key in taken or hasattr(nn.ParameterDict, key) or hasattr(_BufferDict, key):
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


def _fold_constants(graph: ir.Graph, tensors: dict[str, object]) -> dict[str, tuple[str, torch.Tensor]]:
    """Outputs of the main graph's Constant nodes and of ConstantOfShape nodes with a constant shape."""
    folded: dict[str, tuple[str, torch.Tensor]] = {}
    for node in graph:
        if normalize_domain(node.domain) != "" or len(node.outputs) != 1:
            continue
        if node.op_type == "Constant":
            value = _constant_node_value(node)
        elif node.op_type == "ConstantOfShape" and node.inputs and node.inputs[0] is not None:
            shape_name = node.inputs[0].name
            shape = folded[shape_name][1] if shape_name in folded else tensors.get(shape_name)
            value = _constant_of_shape(node, shape) if isinstance(shape, torch.Tensor) else None
        else:
            continue
        if value is not None:
            folded[node.outputs[0].name] = (node.op_type, value)
    return folded


def _constant_node_value(node: ir.Node) -> torch.Tensor | None:
    """The value of a Constant node as a tensor; None for string and sparse constants (left to the op)."""
    for key, attr in node.attributes.items():
        if key == "value":
            tensor = tensor_from_ir(attr.value)
            return tensor if isinstance(tensor, torch.Tensor) else None
        if key == "value_float":
            return torch.tensor(attr.value, dtype=torch.float32)
        if key == "value_floats":
            return torch.tensor(list(attr.value), dtype=torch.float32)
        if key == "value_int":
            return torch.tensor(attr.value, dtype=torch.int64)
        if key == "value_ints":
            return torch.tensor(list(attr.value), dtype=torch.int64)
    return None


def _constant_of_shape(node: ir.Node, shape: torch.Tensor) -> torch.Tensor:
    attr = node.attributes.get("value")
    fill = tensor_from_ir(attr.value) if attr is not None else torch.zeros(1, dtype=torch.float32)
    return torch.full([int(d) for d in shape.reshape(-1).tolist()], fill.reshape(-1)[0].item(), dtype=fill.dtype)


def _identity_aliases(graph: ir.Graph, names: set[str]) -> dict[str, str]:
    """Outputs of the main graph's Identity nodes over constants (also chained) -> the constant's name."""
    alias: dict[str, str] = {}
    for node in graph:
        if node.op_type == "Identity" and normalize_domain(node.domain) == "" and node.inputs and node.inputs[0] is not None:
            root = alias.get(node.inputs[0].name, node.inputs[0].name)
            if root in names:
                alias[node.outputs[0].name] = root
    return alias


def _constant_only_names(graph: ir.Graph, names: set[str]) -> set[str]:
    """Names among ``names`` read only at non-trainable slots (looking through Identity), or never read."""
    return {name for name, used in _constant_slots(graph, names).items() if used <= _NON_TRAINABLE_INPUTS}


def _constant_slots(graph: ir.Graph, names: set[str]) -> dict[str, set[tuple[str, int]]]:
    """name -> the (op_type, input index) slots reading it, looking through Identity nodes."""
    alias: dict[str, str] = {}  # Identity output -> the constant it forwards
    slots: dict[str, set[tuple[str, int]]] = {name: set() for name in names}
    for g in _graphs(graph):
        for node in g:
            first = node.inputs[0].name if node.inputs and node.inputs[0] is not None else None
            if node.op_type == "Identity" and first is not None and alias.get(first, first) in names:
                alias[node.outputs[0].name] = alias.get(first, first)
                continue
            for index, value in enumerate(node.inputs):
                if value is not None and alias.get(value.name, value.name) in names:
                    slots[alias.get(value.name, value.name)].add((node.op_type, index))
    for value in graph.outputs:
        if alias.get(value.name, value.name) in names:
            slots[alias.get(value.name, value.name)].add(("graph output", 0))
    return slots


def _first_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
