"""A compiled ONNX graph: a flat list of steps the module runs in order.

Compiling happens once, at ``to_torch`` time: every node is resolved to its op function (an
unsupported op raises there, not at the first forward), attributes are converted to Python/torch
values, and the last use of every tensor is recorded so intermediate tensors are freed early.
Subgraphs (If/Loop/Scan bodies) compile to nested Programs that read the enclosing scope.

Two things keep the per-call cost near that of the torch module the graph came from: steps that
only compute shapes (Shape -> Gather -> Concat -> Reshape) run once per input signature and are
cached, and node patterns exporters split out of one torch kernel (Linear, GELU) run fused.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError, UnsupportedOpError
from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.ops._common import as_ints
from onnxkd.torch_bridge.registry import OpContext, RunState, lookup, normalize_domain


@dataclass
class Step:
    fn: Callable[..., Any]
    ctx: OpContext
    inputs: tuple[str, ...]  # "" = missing optional input
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


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
    def __init__(self, graph: ir.Graph, opsets: Mapping[str, int], state: RunState, constant_names: set[str],
                 static_names: set[str] | None = None, weight_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 scalars: Mapping[str, float] | None = None):
        self.state = state
        self.input_names = [v.name for v in graph.inputs if v.name not in constant_names]
        self.output_names = [v.name for v in graph.outputs]
        self.subgraph_steps: list[Step] = []
        # Nodes whose outputs were folded into constants (Constant, ConstantOfShape of a constant shape) do not run.
        self.steps = [
            self._compile_node(node, index, opsets, constant_names)
            for index, node in enumerate(graph)
            if not (node.outputs and all(v.name in constant_names for v in node.outputs))
        ]
        # Exporters split torch's fused kernels into several nodes; run them fused again (fewer steps and
        # kernels, forward and backward). A capture of a tensor a fusion removed runs the unfused steps.
        self.fused_steps, self.fused_away = _fuse_linear(self.steps, weight_shapes or {}, set(self.output_names))
        self.fused_steps, gelu_away = _fuse_gelu(self.fused_steps, scalars or {}, set(self.output_names))
        self.fused_away |= gelu_away
        self._plan_static(static_names, set(constant_names) | set(self.input_names))

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
        step = Step(fn, ctx, ctx.input_names, ctx.output_names, attrs)
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

    def _plan_static(self, static_names: set[str] | None, fixed_shapes: set[str]) -> None:
        """Find the steps whose outputs depend only on the input shapes (Shape -> Gather -> Concat -> Reshape
        chains of exported graphs) and on constants that never change; ``run`` caches their outputs per
        input signature, so a forward with known shapes runs only the other steps. Where such a value is
        read as a list of ints (Reshape's shape, Slice's starts, ...), the cache also holds it as a Python
        list: no tensor-to-list conversion per call, and nothing data-dependent for torch.compile.

        Shape/Size count as static only when the shape they read is itself a function of the input shapes
        (``fixed_shapes``: graph inputs and constants, then ``_shape_follows``): after NonZero, Unique,
        TopK with a computed k, a Loop, ... the shape depends on the data and must be read every call."""
        self.static_outputs: tuple[str, ...] = ()
        self._static_cache: dict[Any, dict[str, Any]] = {}
        self._int_names: tuple[str, ...] = ()
        # (skip the cached static steps?, fused?) -> rows of the steps to run
        self._plans = {(False, False): _plan_rows(self.steps, set(self.output_names)),
                       (False, True): _plan_rows(self.fused_steps, set(self.output_names))}
        self._plans[(True, False)], self._plans[(True, True)] = self._plans[(False, False)], self._plans[(False, True)]
        if static_names is None:
            return
        static = set(static_names) | {""}
        shaped = set(fixed_shapes) | {""}  # values whose shape depends on the input shapes alone
        static_steps = set()
        for index, step in enumerate(self.steps):
            if _shape_follows(step, shaped, static, step in self.subgraph_steps):
                shaped.update(step.outputs)
            if step.ctx.op_type in _NEVER_STATIC or step in self.subgraph_steps or step.ctx.domain != "":
                continue
            shape_only = step.ctx.op_type in ("Shape", "Size") and step.inputs[0] in shaped
            if shape_only or (step.inputs and all(name in static for name in step.inputs)):
                static.update(step.outputs)
                static_steps.add(index)
        self.static_outputs = tuple(n for i in sorted(static_steps) for n in self.steps[i].outputs if n)
        static_ids = {id(self.steps[i].ctx) for i in static_steps}
        int_names: dict[str, None] = {}
        for fused in (False, True):
            rows = []
            for row in self._plans[(False, fused)]:
                if id(row[1]) in static_ids:
                    continue
                ctx, inputs = row[1], row[2]
                if ctx.domain == "" and any(name and name in static and (ctx.op_type, i) in _INT_INPUTS for i, name in enumerate(inputs)):
                    renamed = []
                    for i, name in enumerate(inputs):
                        if name and name in static and (ctx.op_type, i) in _INT_INPUTS:
                            int_names[name] = None
                            name = name + _INTS
                        renamed.append(name)
                    row = (row[0], ctx, tuple(renamed)) + row[3:]
                rows.append(row)
            self._plans[(True, fused)] = rows
        self._int_names = tuple(int_names)
        if not self.static_outputs and not self._int_names:
            self._plans[(True, False)], self._plans[(True, True)] = self._plans[(False, False)], self._plans[(False, True)]

    def _static_entry(self, env: Mapping[str, Any]) -> dict[str, Any]:
        entry = {name: env[name] for name in self.static_outputs if name in env}
        for name in self._int_names:
            value = env.get(name)
            if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dim() <= 1:
                entry[name + _INTS] = as_ints(value)
            else:
                entry[name + _INTS] = value
        return entry

    def run(self, env: dict[str, Any], capture: Mapping[str, Any] | None = None, static_key: Any = None,
            compiling: bool = False) -> list[Any]:
        """Run every step on ``env`` (name -> tensor, updated in place); ``capture`` is a dict to fill.

        ``static_key`` (hashable: the input shapes, dtypes and device) enables the cache of shape-only
        steps; without it (subgraphs) every step runs. ``compiling``: under torch.compile the cached
        values are looked up (or computed) eagerly, outside the traced graph.
        """
        for step in self.subgraph_steps:
            for value in step.attrs.values():
                for sub in value if isinstance(value, list) else [value]:
                    if isinstance(sub, Subgraph):
                        sub.outer = env
        env[""] = None  # a missing optional input reads as None
        fused = not (capture and self.fused_away.intersection(capture))
        cached = None
        if static_key is not None and (self.static_outputs or self._int_names):
            cached = self._static_cache.get(static_key)
            if cached is None and compiling:
                # A graph break the first time a shape is seen; once cached, the traced graph reads the cache.
                cached = _static_values(self, static_key, env)
            if cached is None:
                self._run(self._plans[(False, fused)], env, capture, keep=self.static_outputs)
                if len(self._static_cache) >= _STATIC_CACHE_SIZE:
                    self._static_cache.clear()
                self._static_cache[static_key] = self._static_entry(env)
                return [env[name] for name in self.output_names]
            env.update(cached)
            if capture is not None:
                for name in capture:
                    if name in cached:
                        capture[name] = cached[name]
        self._run(self._plans[(cached is not None, fused)], env, capture)
        return [env[name] for name in self.output_names]

    @staticmethod
    def _run(plan: list[tuple], env: dict[str, Any], capture: Mapping[str, Any] | None, keep: tuple[str, ...] = ()) -> None:
        # Each intermediate is freed after its last read (a captured one lives on in ``capture``), unless the
        # static outputs are being collected for the cache.
        free = not keep
        for fn, ctx, inputs, outputs, single, attrs, free_after in plan:
            result = fn(ctx, *[env[name] for name in inputs], **attrs)
            if single:
                # Ops return a tensor, or a tuple when they can have several outputs (extra ones unused here).
                env[outputs[0]] = result[0] if type(result) is tuple else result
            else:
                for name, value in zip(outputs, result):
                    if name:
                        env[name] = value
            if capture is not None:
                for name in outputs:
                    if name in capture:
                        capture[name] = env[name]
            if free:
                for name in free_after:
                    env.pop(name, None)


# Ops whose outputs are not a function of their inputs' values and shapes alone: never cached.
_NEVER_STATIC = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout",
})
_STATIC_CACHE_SIZE = 16
# Ops whose output shape depends on their inputs' values, whatever those are.
_DATA_SHAPED = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress", "StringSplit", "RegexFullMatch",
                          "TfIdfVectorizer", "Loop", "Scan", "If"})
# Inputs whose *values* set the output shape: (op_type, input index).
_SHAPE_ARGS = frozenset(
    [("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Upsample", 1), ("TopK", 1),
     ("OneHot", 1), ("Split", 1), ("Squeeze", 1), ("Unsqueeze", 1), ("CenterCropPad", 1), ("MaxUnpool", 2),
     ("DFT", 1), ("Col2Im", 1), ("Col2Im", 2), ("STFT", 2), ("STFT", 3), ("Pad", 1), ("Pad", 3)]
    + [("Slice", i) for i in (1, 2, 3, 4)] + [("Range", i) for i in (0, 1, 2)] + [("Resize", i) for i in (1, 2, 3)]
    + [(f"Reduce{r}", 1) for r in ("Max", "Min", "Mean", "Sum", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")]
)


def _shape_follows(step: "Step", shaped: set[str], static: set[str], has_subgraph: bool) -> bool:
    """Whether the step's output shapes are a function of the input shapes alone: every input's shape is,
    every input whose value sets a shape is static, and the op is not one whose shape follows its data."""
    ctx = step.ctx
    if has_subgraph or ctx.domain != "" or ctx.op_type in _DATA_SHAPED or ctx.op_type.startswith("Sequence"):
        return False
    for index, name in enumerate(step.inputs):
        if name not in shaped or ((ctx.op_type, index) in _SHAPE_ARGS and name not in static):
            return False
    return True
# Inputs every op reads as a list of ints (through as_ints): (op_type, input index).
_INT_INPUTS = frozenset(
    [("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Split", 1), ("TopK", 1)]
    + [("Slice", i) for i in (1, 2, 3, 4)]
    + [(f"Reduce{r}", 1) for r in ("Max", "Min", "Mean", "Sum", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")]
)
_INTS = "#ints"  # suffix of the env entry holding a static value as a Python list


@torch.compiler.disable
def _static_values(program: "Program", key: Any, env: Mapping[str, Any]) -> dict[str, Any]:
    """The cached static values for ``key``, computed eagerly on a miss (torch.compile runs this outside its graph).

    A miss runs the whole graph once in eval mode without gradients: shape-only steps may read the shapes of
    intermediate tensors, and eval mode leaves running statistics and the random state alone.
    """
    cached = program._static_cache.get(key)
    if cached is None:
        local = dict(env)
        training, program.state.training = program.state.training, False
        try:
            with torch.no_grad():
                Program._run(program._plans[(False, False)], local, None, keep=program.static_outputs)
        finally:
            program.state.training = training
        cached = program._static_entry(local)
        if len(program._static_cache) >= _STATIC_CACHE_SIZE:
            program._static_cache.clear()
        program._static_cache[key] = cached
    return cached


def _plan_rows(steps: list[Step], keep: set[str]) -> list[tuple]:
    """The rows ``_run`` loops over, with the tensors each step is the last reader of (freed after it)."""
    reads = [tuple(n for n in dict.fromkeys(step.inputs + _outer_reads(step)) if n) for step in steps]
    last_reader = {name: index for index, names in enumerate(reads) for name in names}
    produced = {name for step in steps for name in step.outputs}
    rows = []
    for index, step in enumerate(steps):
        free_after = tuple(n for n in reads[index] if last_reader[n] == index and n in produced and n not in keep)
        rows.append((step.fn, step.ctx, step.inputs, step.outputs, len(step.outputs) == 1, step.attrs, free_after))
    return rows


def _fuse_linear(steps: list[Step], weight_shapes: Mapping[str, tuple[int, ...]], keep: set[str]) -> tuple[list[Step], set[str]]:
    """``MatMul(x, W) -> Add(., b)`` with parameters W (2-D) and b (1-D) as one ``F.linear`` step, the fused
    kernel the exported torch Linear used. Returns the new step list and the MatMul outputs no longer
    computed (a capture asking for one of them runs the unfused steps)."""
    readers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for name in step.inputs + _outer_reads(step):
            readers.setdefault(name, []).append(index)
    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for index, step in enumerate(steps):
        if step.ctx.op_type != "MatMul" or step.ctx.domain != "" or len(step.inputs) != 2:
            continue
        weight = weight_shapes.get(step.inputs[1])
        out = step.outputs[0]
        users = readers.get(out, [])
        if weight is None or len(weight) != 2 or out in keep or len(users) != 1:
            continue
        add = steps[users[0]]
        if add.ctx.op_type != "Add" or add.ctx.domain != "" or add.attrs or len(add.inputs) != 2 or add.ctx.opset < 7:
            continue
        bias = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
        if bias == out or weight_shapes.get(bias) != (weight[1],):
            continue
        replace[users[0]] = Step(_linear, add.ctx, (step.inputs[0], step.inputs[1], bias), add.outputs, {})
        drop.add(index)
    fused = [replace.get(i, step) for i, step in enumerate(steps) if i not in drop]
    return fused, {steps[i].outputs[0] for i in drop}


def _linear(ctx, x, weight, bias):
    return F.linear(x, weight.t(), bias)


def _fuse_gelu(steps: list[Step], scalars: Mapping[str, float], keep: set[str]) -> tuple[list[Step], set[str]]:
    """The exact GELU as torch's exporter writes it, ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``,
    as one ``F.gelu`` step. Returns the new step list and the intermediate tensors no longer computed."""
    producer = {name: index for index, step in enumerate(steps) for name in step.outputs if name}
    readers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for name in step.inputs + _outer_reads(step):
            readers.setdefault(name, []).append(index)

    def only_reader(index: int, op_type: str) -> int | None:
        out = steps[index].outputs[0]
        users = readers.get(out, [])
        if out in keep or len(users) != 1 or steps[users[0]].ctx.op_type != op_type or steps[users[0]].ctx.domain != "":
            return None
        return users[0]

    def other(step: Step, name: str) -> str | None:
        if len(step.inputs) != 2 or step.attrs or step.ctx.opset < 7 or name not in step.inputs:
            return None
        return step.inputs[1] if step.inputs[0] == name else step.inputs[0]

    def is_scalar(name: str | None, value: float) -> bool:
        return name in scalars and abs(scalars[name] - value) < 1e-6

    replace: dict[int, Step] = {}
    drop: set[int] = set()
    for e, erf in enumerate(steps):
        if erf.ctx.op_type != "Erf" or erf.ctx.domain != "" or erf.inputs[0] not in producer:
            continue
        d = producer[erf.inputs[0]]
        div = steps[d]
        if div.ctx.op_type != "Div" or div.attrs or len(div.inputs) != 2 or only_reader(d, "Erf") != e:
            continue
        x = div.inputs[0]
        if not is_scalar(div.inputs[1], 2 ** 0.5):
            continue
        a = only_reader(e, "Add")
        m1 = only_reader(a, "Mul") if a is not None else None
        m2 = only_reader(m1, "Mul") if m1 is not None else None
        if m2 is None or not is_scalar(other(steps[a], erf.outputs[0]), 1.0) or other(steps[m1], steps[a].outputs[0]) != x:
            continue
        if not is_scalar(other(steps[m2], steps[m1].outputs[0]), 0.5):
            continue
        replace[m2] = Step(_gelu, steps[m2].ctx, (x,), steps[m2].outputs, {})
        drop.update((d, e, a, m1))
    fused = [replace.get(i, step) for i, step in enumerate(steps) if i not in drop]
    return fused, {steps[i].outputs[0] for i in drop}


def _gelu(ctx, x):
    return F.gelu(x)


def _outer_reads(step: Step) -> tuple[str, ...]:
    """Names a step's subgraphs read from the enclosing scope (so they stay alive until the step runs)."""
    names: list[str] = []
    for value in step.attrs.values():
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, Subgraph):
                program = sub.program
                local = set(program.input_names) | {n for s in program.steps for n in s.outputs}
                names += [n for s in program.steps for n in s.inputs + _outer_reads(s) if n and n not in local]
                names += [n for n in program.output_names if n not in local]
    return tuple(dict.fromkeys(names))


def unsupported_reason(node: ir.Node, opsets: Mapping[str, int]) -> str | None:
    """Why ``to_torch`` would refuse ``node`` (no implementation at its opset, an attribute its function does
    not implement), or None when the bridge runs it. ``onnxkd inspect`` asks the same question."""
    domain = normalize_domain(node.domain)
    opset = node.version if node.version is not None else int(opsets.get(domain, 1))
    fn = lookup(node.op_type, domain, opset)
    if fn is None:
        return f"no implementation of {node.op_type} at opset {opset}"
    ctx = OpContext(node_name=node.name or node.op_type, op_type=node.op_type, domain=domain, opset=opset,
                    num_outputs=len(node.outputs), state=RunState(), input_names=(), output_names=())
    try:
        _check_signature(fn, ctx, dict.fromkeys(node.attributes))
    except OnnxkdError as exc:
        return str(exc)
    return None


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


def tensor_from_ir(tensor: ir.TensorProtocol, copy: bool = True) -> torch.Tensor:
    """An ONNX tensor as a torch tensor (bfloat16/float8 through their raw bits where numpy lacks them);
    ``copy=False``: in the tensor's own memory where it can be (``dtypes.array_to_torch``)."""
    array = tensor.numpy()
    return dtypes.array_to_torch(array, tensor.dtype, copy)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))
