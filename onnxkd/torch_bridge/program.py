"""A compiled ONNX graph: a flat list of steps the module runs in order.

Compiling happens once, at ``to_torch`` time: every node is resolved to its op function (an
unsupported op raises there, not at the first forward), attributes are converted to Python/torch
values, and the last use of every tensor is recorded so intermediate tensors are freed early.
Subgraphs (If/Loop/Scan bodies) compile to nested Programs that read the enclosing scope.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnx_ir as ir
import torch

from onnxkd.errors import OnnxkdError, UnsupportedOpError
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.registry import OpContext, RunState, lookup, normalize_domain


@dataclass
class Step:
    fn: Callable[..., Any]
    ctx: OpContext
    inputs: tuple[str, ...]  # "" = missing optional input
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    free_after: tuple[str, ...]  # tensors whose last reader is this step


class Subgraph:
    """A graph attribute (If branch, Loop/Scan body): call with its inputs, get its outputs as a list."""

    def __init__(self, program: "Program"):
        self.program = program
        self.outer: Mapping[str, Any] = {}

    @property
    def input_names(self) -> list[str]:
        return self.program.input_names

    def __call__(self, *inputs: Any) -> list[Any]:
        env = dict(self.outer)
        env.update(zip(self.program.input_names, inputs))
        return self.program.run(env)


class Program:
    def __init__(self, graph: ir.Graph, opsets: Mapping[str, int], state: RunState, constant_names: set[str]):
        self.state = state
        self.input_names = [v.name for v in graph.inputs if v.name not in constant_names]
        self.output_names = [v.name for v in graph.outputs]
        self.subgraph_steps: list[Step] = []
        self.steps = [self._compile_node(node, index, opsets, constant_names) for index, node in enumerate(graph)]
        self._plan_frees()

    def _compile_node(self, node: ir.Node, index: int, opsets: Mapping[str, int], constant_names: set[str]) -> Step:
        domain = normalize_domain(node.domain)
        opset = int(opsets.get(domain, opsets.get("ai.onnx", 1)) if domain == "" else opsets.get(domain, 1))
        if node.version is not None:
            opset = node.version
        name = node.name or f"{node.op_type}_{index}"
        fn = lookup(node.op_type, domain, opset)
        if fn is None:
            raise UnsupportedOpError(node.op_type, domain, opset, name)
        ctx = OpContext(
            node_name=name, op_type=node.op_type, domain=domain, opset=opset,
            num_outputs=len(node.outputs), state=self.state,
            input_names=tuple(v.name if v is not None else "" for v in node.inputs),
            output_names=tuple(v.name for v in node.outputs),
        )
        attrs = {key: self._convert_attr(attr, opsets, constant_names) for key, attr in node.attributes.items()}
        _check_signature(fn, ctx, attrs)
        step = Step(fn, ctx, ctx.input_names, ctx.output_names, attrs, ())
        if any(isinstance(v, Subgraph) or (isinstance(v, list) and v and isinstance(v[0], Subgraph)) for v in attrs.values()):
            self.subgraph_steps.append(step)
        return step

    def _convert_attr(self, attr: ir.Attr, opsets: Mapping[str, int], constant_names: set[str]) -> Any:
        kind = attr.type
        if kind == ir.AttributeType.GRAPH:
            return Subgraph(Program(attr.value, opsets, self.state, constant_names))
        if kind == ir.AttributeType.GRAPHS:
            return [Subgraph(Program(g, opsets, self.state, constant_names)) for g in attr.value]
        if kind == ir.AttributeType.TENSOR:
            return tensor_from_ir(attr.value)
        if kind == ir.AttributeType.TENSORS:
            return [tensor_from_ir(t) for t in attr.value]
        if kind in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
            return list(attr.value)
        if kind == ir.AttributeType.SPARSE_TENSOR:
            raise OnnxkdError(f"attribute {attr.name!r}: sparse tensor attributes are not supported")
        return attr.value

    def _plan_frees(self) -> None:
        """Record after which step each intermediate tensor is dead, so memory follows the graph's frontier."""
        keep = set(self.output_names)
        last_reader: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            for name in step.inputs:
                if name:
                    last_reader[name] = index
        produced = {name for step in self.steps for name in step.outputs}
        for index, step in enumerate(self.steps):
            dead = [n for n in dict.fromkeys(step.inputs) if n and last_reader.get(n) == index and n in produced and n not in keep]
            step.free_after = tuple(dead)

    def run(self, env: dict[str, Any], capture: Mapping[str, Any] | None = None) -> list[Any]:
        """Run every step on ``env`` (name -> tensor, updated in place); ``capture`` is a dict to fill."""
        for step in self.subgraph_steps:
            for value in step.attrs.values():
                for sub in value if isinstance(value, list) else [value]:
                    if isinstance(sub, Subgraph):
                        sub.outer = env
        for step in self.steps:
            args = [env[name] if name else None for name in step.inputs]
            result = step.fn(step.ctx, *args, **step.attrs)
            if len(step.outputs) == 1:
                # Ops return a tensor, or a tuple when they can have several outputs (extra ones unused here).
                env[step.outputs[0]] = result[0] if type(result) is tuple else result
            else:
                for name, value in zip(step.outputs, result):
                    if name:
                        env[name] = value
            if capture is not None:
                for name in step.outputs:
                    if name in capture:
                        capture[name] = env[name]
            if capture is None:
                for name in step.free_after:
                    env.pop(name, None)
        return [env[name] for name in self.output_names]


def _check_signature(fn: Callable, ctx: OpContext, attrs: dict[str, Any]) -> None:
    """Fail at conversion time when a node carries an attribute its op function does not implement."""
    signature = inspect.signature(fn)
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    known = {n for n, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(attrs) - known)
    if unknown:
        raise OnnxkdError(
            f"node {ctx.node_name!r} ({ctx.op_type}, opset {ctx.opset}): attribute(s) {', '.join(unknown)} not supported by the torch bridge"
        )


def tensor_from_ir(tensor: ir.TensorProtocol) -> torch.Tensor:
    """An ONNX tensor as a torch tensor (bfloat16/float8 through their raw bits where numpy lacks them)."""
    array = tensor.numpy()
    return dtypes.array_to_torch(array, tensor.dtype)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))
