"""Static shapes for the dependency analysis, with every dynamic input dim set to a stand-in value.

Exporters compute reshape targets at run time (head_dim = Shape(x)[-1] / heads; the dynamo exporter's
scaled-dot-product attention folds batch and heads into one axis and back), so onnx's shape inference
leaves many dims unknown and channels could not be followed through those reshapes. With each dynamic
input dim fixed to its own large prime, the shape arithmetic folds (``shape_folding``) and every tensor
gets a concrete shape.

Why this is sound: a dynamic dim can never be baked into a constant, so no weight, no sliced constant
and no shape-constant entry the rewrite edits depends on its value; it only decides how many times a
channel layout repeats along an axis it was merged into (batch x heads), and any value gives the same
structure. Axes whose real extent is dynamic are marked, so the plan never records channel positions on
them (those positions would hold for the stand-in only).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper
from onnxkd.graph_passes.analyze.shape_folding import infer_at

# Large primes, one per distinct dynamic dim: unlikely to equal a static dim, so reshapes pair axes
# the way they do at any real value.
STAND_INS = (97, 89, 83, 79, 73, 71, 67, 61, 59, 53)


# For models that bound a dynamic dim below those: a positional table of 16 sliced to the sequence length gives
# [1, 16, d] at a stand-in of 89, which does not add to [97, 89, d], and every shape after it is lost. Tried
# only when the large primes leave some tensor without a shape; kept only when they shape more tensors.
SMALL_STAND_INS = (13, 11, 7, 5)
# For models that need a dynamic dim divisible by their total stride: a detector's feature pyramid upsamples
# H/16 by 2 and concatenates it with H/8, which match only where H is a multiple of 16. Primes times 128: as
# unlikely as the primes to equal a static dim, divisible by any stride up to 128.
ALIGNED_STAND_INS = tuple(128 * p for p in STAND_INS)
FALLBACK_STAND_INS = (SMALL_STAND_INS, ALIGNED_STAND_INS)


def concrete_shapes(model: ir.Model, stand_ins: tuple[int, ...] | None = None) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """(value name -> static shape, value name -> small integer value folded from shape arithmetic), both
    with the dynamic input dims at stand-in values; ({}, {}) when inference fails.

    A folded value that does not depend on a dynamic dim (a 1 in an Expand target) is the value at any
    input size; one that does holds a stand-in (a prime) where the real graph has the dynamic size.
    ``stand_ins``: the values to use; by default ``STAND_INS``, or a fallback set where the model gets more of
    its shapes with it (``SMALL_STAND_INS``, ``ALIGNED_STAND_INS``).
    """
    if stand_ins is not None:
        return _concrete_shapes(model, stand_ins)
    return _fitting_stand_ins(model)[1]


Concrete = tuple[dict[str, list[int]], dict[str, np.ndarray]]


def _fitting_stand_ins(model: ir.Model) -> tuple[tuple[int, ...], Concrete]:
    """The stand-in set that shapes the model best (``STAND_INS`` unless a fallback set shapes more of its
    tensors; fallbacks are tried only for a model with dynamic dims that the large primes leave unshaped), and
    ``concrete_shapes`` at it."""
    sizes, best = STAND_INS, _concrete_shapes(model, STAND_INS)
    if not _symbols(model):
        return sizes, best
    outputs = {v.name for node in model.graph for v in node.outputs if v.name}
    for other_sizes in FALLBACK_STAND_INS:
        if outputs <= set(best[0]):
            break
        other = _concrete_shapes(model, other_sizes)
        if len(other[0]) > len(best[0]):
            sizes, best = other_sizes, other
    return _at_a_baked_size(model, sizes, best)


MAX_BAKED_TRIES = 12


def _at_a_baked_size(model: ir.Model, sizes: tuple[int, ...], best: Concrete) -> tuple[tuple[int, ...], Concrete]:
    """Stand-ins that give a dynamic dim the size an export baked into a Reshape target, where one did.

    torch's legacy exporter traces nn.MultiheadAttention's key/value view with the example's sequence length as a
    constant ([12, batch * heads, head_dim]) while the input still declares the length dynamic: such a file runs
    at that length only (onnxruntime refuses any other), and at the primes the Reshape's input and target
    disagree on the element count, so no channel can be followed through it. Each entry of such a target is tried
    as the size of each dynamic dim; a try is kept when it reconciles more Reshapes. The analysis then sees the
    model at the one size it runs at; the dim stays marked dynamic, so no channel position is recorded on it."""
    mismatched = _mismatched_reshapes(model, best)
    if not mismatched:
        return sizes, best
    entries = sorted({int(v) for target in mismatched for v in np.asarray(target).reshape(-1) if v > 1})
    tries = [(position, value) for value in entries for position in range(min(len(_symbols(model)), len(sizes)))
             if value not in sizes][:MAX_BAKED_TRIES]
    for position, value in tries:
        trial = sizes[:position] + (value,) + sizes[position + 1:]
        other = _concrete_shapes(model, trial)
        still = _mismatched_reshapes(model, other)
        if len(still) < len(mismatched):
            sizes, best, mismatched = trial, other, still
            if not mismatched:
                break
    return sizes, best


def _mismatched_reshapes(model: ir.Model, concrete: Concrete) -> list[np.ndarray]:
    """The folded targets of the Reshapes that cannot reshape their input at ``concrete``'s sizes."""
    shapes, values = concrete
    found = []
    for node in model.graph.all_nodes():
        if node.op_type != "Reshape" or len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
            continue
        before = shapes.get(node.inputs[0].name)
        target = values.get(node.inputs[1].name)
        if target is None and node.inputs[1].const_value is not None:
            target = node.inputs[1].const_value.numpy()
        if before and target is not None and not _reshapes(before, np.asarray(target).reshape(-1).tolist(),
                                                           bool(node.attributes.get_int("allowzero", 0))):
            found.append(target)
    return found


def _reshapes(before: list[int], target: list[int], allowzero: bool) -> bool:
    """Whether ``before`` can be reshaped to ``target`` (ONNX Reshape: 0 copies the input's dim unless allowzero,
    -1 takes what is left)."""
    dims = [before[i] if d == 0 and not allowzero and i < len(before) else d for i, d in enumerate(target)]
    known = int(np.prod([d for d in dims if d != -1]))
    total = int(np.prod(before))
    return (total % known == 0) if -1 in dims and known else total == known


def _symbols(model: ir.Model) -> list[str]:
    """The dynamic input dims, one key per distinct symbol (an unnamed dim is its own), in stand-in order."""
    keys: list[str] = []
    for value in _fed_inputs(model):
        for axis, dim in enumerate(value.shape):
            if not (isinstance(dim, int) and dim > 0):
                key = _dim_key(value, axis, dim)
                if key not in keys:
                    keys.append(key)
    return keys


def _fed_inputs(model: ir.Model) -> list[ir.Value]:
    """The graph inputs fed at run time that declare a shape (old exporters also list initializers as inputs)."""
    return [value for value in model.graph.inputs
            if value.name not in model.graph.initializers and value.shape is not None]


def _dim_key(value: ir.Value, axis: int, dim) -> str:
    """A dynamic dim's stand-in key: its symbol, shared by every dim that names it; an unnamed dim is its own."""
    return str(dim) if isinstance(dim, ir.SymbolicDim) and dim.value else f"?{value.name}:{axis}"


def concrete_at_two_sizes(model: ir.Model) -> tuple[Concrete, Concrete]:
    """``concrete_shapes`` at two different sets of stand-in sizes (the set that fits the model, and the same
    values rotated so that each dynamic dim gets another), for rewrites that must hold at any input size: an
    equality seen at both is not a coincidence of one."""
    sizes, first = _fitting_stand_ins(model)
    return first, _concrete_shapes(model, sizes[1:] + sizes[:1])


def _concrete_shapes(model: ir.Model, stand_ins: tuple[int, ...]) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    size = {key: stand_ins[i % len(stand_ins)] for i, key in enumerate(_symbols(model))}
    fixed = {value.name: [dim if isinstance(dim, int) and dim > 0 else size[_dim_key(value, axis, dim)]
                          for axis, dim in enumerate(value.shape)] for value in _fed_inputs(model)}
    try:
        proto = infer_at(model, fixed)
    except Exception:  # noqa: BLE001  (inference failing leaves the analysis with the symbolic shapes)
        return {}, {}
    shapes: dict[str, list[int]] = {}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
            if all(isinstance(d, int) and d > 0 for d in dims):
                shapes[value.name] = dims
    known = set(model.graph.initializers)
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer
              if t.name not in known and t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)}
    return shapes, values


def shapes_at_two_sizes(model: ir.Model) -> list[dict[str, list[int]]]:
    """Every tensor's shape at two different sets of stand-in sizes (``concrete_at_two_sizes``), initializers'
    shapes read from the model."""
    static = {v.name: list(v.shape) for v in model.graph.initializers.values()
              if v.shape is not None and all(isinstance(d, int) for d in v.shape)}
    return [{**static, **shapes} for shapes, _ in concrete_at_two_sizes(model)]
