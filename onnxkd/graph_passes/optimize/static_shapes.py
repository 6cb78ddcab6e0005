"""Shape arithmetic that exporters write for run time becomes constants, where that is exact.

``x.view(x.size(0), T, H, D)`` exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape: four to
six tiny nodes per Reshape, with the batch dim the only unknown. On the test zoo's transformers this
shape arithmetic took about 45% of onnxruntime's kernel time (ViT, onnxruntime profile), and pruning
cannot shrink it. Each entry of the target is evaluated from the graph: a constant, or a dim that
shape inference knows statically, stays a number; the dim the target copies from the Reshape's own
input at the same position becomes 0 (ONNX: copy that dim); at most one entry left unknown becomes -1
(ONNX: infer it from the size). Anything else leaves the Reshape as it is. Reads of static dims
(``q.size(-1) ** -0.5``, attention's scale: Shape -> Slice -> Cast -> Sqrt -> Div) become constants
too, and ``clean_up`` folds what follows. The arithmetic then has no reader and is dropped.

onnxscript's ``materialize_reshape_shape_rule`` does the same from the Reshape's inferred output
shape, but onnx's inference loses the dims computed by division (head_dim = C // heads), so it folds
2 of 8 Reshapes of the zoo's BERT; evaluating the entries folds them all.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

_UNKNOWN = object()  # a dynamic entry that is not a dim of a known tensor
_INTEGER_OPS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}
_EVALUATED = {"Shape", "Cast", "Identity", "Unsqueeze", "Squeeze", "Concat", "Gather", "Slice", "Div", *_INTEGER_OPS}
Entry = object  # int, ("dim", value name, axis, symbolic name or None), or _UNKNOWN


def fold_static_shapes(model: ir.Model, rounds: int = 3) -> int:
    """Replace computed Reshape targets and reads of static dims in the main graph with constants, in
    place; how many Reshape targets were. A folded target gives onnx's inference static dims downstream
    (a head_dim it could not divide), which the next round can read."""
    total = 0
    for _ in range(rounds):
        targets, reads = _fold_once(model)
        total += targets
        if not targets and not reads:
            break
    return total


def _fold_once(model: ir.Model) -> tuple[int, int]:
    dynamic = [n for n in model.graph if n.op_type == "Reshape" and n.domain in ("", "ai.onnx")
               and len(n.inputs) == 2 and ir.convenience.get_const_tensor(n.inputs[1]) is None
               and _attribute(n, "allowzero", 0) == 0]
    reads = [n for n in model.graph if n.op_type in ("Gather", "Slice") and n.domain in ("", "ai.onnx")
             and n.inputs[0] is not None and n.inputs[0].producer() is not None
             and n.inputs[0].producer().op_type == "Shape" and n.outputs[0].uses()]  # (not one replaced before)
    if not dynamic and not reads:
        return 0, 0
    shapes = inferred_shapes(model)
    outputs = set(model.graph.outputs)
    read = 0
    for node in reads:
        value = _evaluate(node.outputs[0], shapes, depth=0)
        numbers = value if isinstance(value, list) else [value]
        if value is None or node.outputs[0] in outputs or not all(isinstance(v, int) for v in numbers):
            continue
        constant = _constant(model, f"{node.outputs[0].name}_static", np.array(value, dtype=np.int64))
        ir.convenience.replace_all_uses_with(node.outputs[0], constant)
        read += 1
    folded = 0
    for node in dynamic:
        entries = _evaluate(node.inputs[1], shapes, depth=0)
        if not isinstance(entries, list):
            continue
        target = _target(entries, node.inputs[0], shapes.get(node.inputs[0].name))
        if target is None:
            continue
        constant = _constant(model, f"{node.inputs[1].name}_static", np.array(target, dtype=np.int64))
        node.replace_input_with(1, constant)
        folded += 1
    return folded, read


def _constant(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    """A new int64 initializer of the main graph, under ``name`` or, if taken, ``name_N``."""
    unique, n = name, 0
    while unique in model.graph.initializers:
        n += 1
        unique = f"{name}_{n}"
    value = ir.Value(name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.INT64),
                     const_value=ir.tensor(array))
    model.graph.register_initializer(value)
    return value


def _target(entries: list[Entry], data: ir.Value, data_dims: list | None) -> list[int] | None:
    """The constant target, or None when more than one entry stays unknown."""
    target, unknown = [], 0
    for position, entry in enumerate(entries):
        if isinstance(entry, int):
            target.append(entry)
        elif _copies(entry, data, data_dims, position):
            target.append(0)  # allowzero 0: copy dim `position` of the input, exactly what was computed
        else:
            target.append(-1)
            unknown += 1
    if unknown > 1 or (unknown == 1 and target.count(-1) > 1):
        return None
    return target


def _copies(entry: Entry, data: ir.Value, data_dims: list | None, position: int) -> bool:
    """The entry is dim ``position`` of the Reshape's input: read from it, or a dim with the same symbolic
    name (ONNX: one name, one size, within a model; onnx's inference names unknown dims apart)."""
    if not isinstance(entry, tuple):
        return False
    _, name, axis, symbol = entry
    if name == data.name and axis == position:
        return True
    return (symbol is not None and data_dims is not None and position < len(data_dims)
            and data_dims[position] == symbol)


def _evaluate(value: ir.Value | None, shapes: dict, depth: int) -> list[Entry] | Entry | None:
    """A 1-D int tensor as a list of entries, a scalar as one entry; None when its length is unknown."""
    if value is None or depth > 32:
        return None
    const = ir.convenience.get_const_tensor(value)
    if const is not None:
        array = const.numpy()
        if array.dtype.kind not in "iu" or array.ndim > 1:
            return None
        return int(array) if array.ndim == 0 else [int(v) for v in array]
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _EVALUATED:
        return None  # (checked before recursing: a walk into the network itself could take very long)
    op = node.op_type
    if op == "Shape":
        return _shape_entries(node, shapes)
    inputs = [_evaluate(v, shapes, depth + 1) for v in node.inputs]
    if op in ("Cast", "Identity"):
        return inputs[0]
    if op == "Unsqueeze":  # a scalar to one element; axes (input from opset 13, attribute before) must be one
        axes = inputs[1] if len(inputs) > 1 else node.attributes.get("axes") and node.attributes["axes"].as_ints()
        scalar = inputs[0] is not None and not isinstance(inputs[0], list)
        return [inputs[0]] if scalar and isinstance(axes, (list, tuple)) and len(axes) == 1 else None
    if op == "Squeeze":
        return inputs[0][0] if isinstance(inputs[0], list) and len(inputs[0]) == 1 else None
    if op == "Concat":
        if any(not isinstance(part, list) for part in inputs):
            return None
        return [entry for part in inputs for entry in part]
    if op == "Gather" and _attribute(node, "axis", 0) == 0:
        return _gather(inputs[0], inputs[1])
    if op == "Slice":
        return _slice(node, inputs)
    if op in _INTEGER_OPS or op == "Div":
        return _arithmetic(op, inputs[0], inputs[1])
    return None


def _shape_entries(node: ir.Node, shapes: dict) -> list[Entry] | None:
    source = node.inputs[0]
    dims = shapes.get(source.name)
    if dims is None:
        return None
    rank = len(dims)
    start, end = _attribute(node, "start", 0), _attribute(node, "end", rank)
    start, end = (max(0, min(rank, i + rank if i < 0 else i)) for i in (start, end))
    return [dims[k] if isinstance(dims[k], int) else ("dim", source.name, k, dims[k]) for k in range(start, end)]


def _gather(data, indices) -> list[Entry] | Entry | None:
    if not isinstance(data, list) or indices is None:
        return None
    picked = indices if isinstance(indices, list) else [indices]
    if not all(isinstance(i, int) and -len(data) <= i < len(data) for i in picked):
        return None
    entries = [data[i] for i in picked]
    return entries if isinstance(indices, list) else entries[0]


def _slice(node: ir.Node, inputs: list) -> list[Entry] | None:
    """A 1-D slice with constant starts and ends (axes 0, step 1); None for anything else."""
    def single(index: int, default: int | None) -> int | None:
        if len(node.inputs) <= index or node.inputs[index] is None:
            return default  # an omitted optional input, not an unknown one
        value = inputs[index]
        return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], int) else None

    starts, ends, axis, step = single(1, None), single(2, None), single(3, 0), single(4, 1)
    if not isinstance(inputs[0], list) or starts is None or ends is None or axis not in (0, -1) or step != 1:
        return None
    return inputs[0][starts:ends]  # Python clamps out-of-range bounds as ONNX does for step 1


def _arithmetic(op: str, a, b) -> list[Entry] | Entry | None:
    """Integer arithmetic on entries: numbers where both sides are numbers, unknown otherwise."""
    if a is None or b is None:
        return None
    as_list = isinstance(a, list) or isinstance(b, list)
    left, right = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    if len(left) != len(right) and 1 not in (len(left), len(right)):
        return None
    size = max(len(left), len(right))
    left, right = left * (size // len(left)), right * (size // len(right))
    out = []
    for x, y in zip(left, right):
        if not (isinstance(x, int) and isinstance(y, int)):
            out.append(_UNKNOWN)
        elif op == "Div":
            out.append(_UNKNOWN if y == 0 else int(np.trunc(x / y)) if x * y < 0 else x // y)
        else:
            out.append(int(_INTEGER_OPS[op](x, y)))
    return out if as_list else out[0]


def _attribute(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def inferred_shapes(model: ir.Model) -> dict[str, list[int | str | None]]:
    """Every value's dims after onnx's shape inference (with data propagation): ints where static, the
    symbolic name where there is one."""
    return {name: dims for name, (_, dims) in inferred_types(model).items()}


def inferred_types(model: ir.Model) -> dict[str, tuple[int, list[int | str | None]]]:
    """Every value's element type (onnx's TensorProto enum) and dims after onnx's shape inference, as in
    ``inferred_shapes``."""
    from onnx_ir.passes.common import _c_api_utils

    from onnxkd.model import graph_copy

    def infer(proto: onnx.ModelProto) -> dict:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        types = {}
        graph = inferred.graph
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                types[info.name] = (info.type.tensor_type.elem_type,
                                    [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                                     for d in info.type.tensor_type.shape.dim])
        return types

    # call_onnx_api leaves large initializers out of the proto, so a > 2 GB model works; a clone keeps the
    # caller's model as it was
    return _c_api_utils.call_onnx_api(infer, graph_copy(model))
