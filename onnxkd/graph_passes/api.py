"""``prune``: analysis -> importance -> plan -> rewrite, as one call; the plan is stored in the student."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxkd.data.spec import check_input_shapes, input_specs, shape_overrides
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.dependency import analyze
from onnxkd.graph_passes.analyze.groups import ChannelGroup
from onnxkd.graph_passes.analyze.quantized import QUANTIZED_ADVICE, refuse_quantized
from onnxkd.graph_passes.normalize.prepare import prepare
from onnxkd.graph_passes.normalize.untie import RetieInitializersPass, RetieShapeConcatsPass
from onnxkd.graph_passes.prune.importance import importance
from onnxkd.graph_passes.prune.plan import (DEFAULT_ROUND_TO, Plan, group_ratios, make_plan, plan_from_json, plan_to_json,
                                           whole_by_rounding)
from onnxkd.graph_passes.prune.rewrite import apply_plan
from onnxkd.model import ModelLike, describe, load

PLAN_KEY = "onnxkd.prune_plan"


@dataclass
class PruneResult:
    # the repr shows the summary: a notebook cell ending in ``prune(...)`` printed the whole graph
    model: ir.Model = field(repr=False)
    plan: Plan = field(repr=False)
    groups: list[ChannelGroup] = field(repr=False)
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "plan": {str(k): v for k, v in self.plan.items()},
                "groups": [g.to_dict() for g in self.groups]}


def channel_groups(model: ModelLike, prune_normalized: bool = False) -> tuple[ir.Model, list[ChannelGroup]]:
    """The prepared copy of ``model`` and its channel groups (``onnxkd inspect``)."""
    prepared = prepare(model)
    return prepared, analyze(prepared, prune_normalized=prune_normalized)


def groups_by_weight(model: ModelLike, ignore: str | None = None, recipe: dict | None = None,
                     prune_normalized: bool = False) -> list[int]:
    """The ids of the groups a ratio cuts (not frozen, ignored or overridden to 0), most parameters first:
    the order ``--target-speedup``'s per-group search tries them in."""
    prune_normalized = prune_normalized or bool((recipe or {}).get("prune_normalized", False))
    prepared, groups = channel_groups(model, prune_normalized)
    cut = {gid for gid, r in group_ratios(groups, 0.5, ignore, recipe).items() if r > 0}

    def weight(group: ChannelGroup) -> float:
        total = 0.0
        for s in group.slices:
            shape = prepared.graph.initializers[s.name].const_value.shape
            rows = shape[0] if s.rows is None else s.rows[1] - s.rows[0]
            total += s.block * np.prod(shape, dtype=float) / shape[s.axis] * rows / shape[0]
        return total * group.size

    return [g.id for g in sorted((g for g in groups if g.id in cut and g.size > 1), key=weight, reverse=True)]


def prune(model: ModelLike, ratio: float, criterion: str = "l1", global_rank: bool = False, round_to: int | None = None,
          ignore: str | None = None, recipe: dict | None = None, gradients: Mapping[str, np.ndarray] | None = None,
          seed: int = 0, input_shapes: dict[str, list[int]] | None = None,
          prune_normalized: bool = False, scores: Mapping[int, np.ndarray] | None = None,
          max_group_ratio: float = 0.9) -> PruneResult:
    """Remove ``ratio`` of the channels of every prunable group; the caller's model is not modified.

    ``gradients`` (criterion ``taylor``) and ``scores`` (criterion ``kd``, per group id of this model's
    analysis) come from data through the torch bridge: ``onnxkd.initializer_gradients`` and
    ``onnxkd.distill.importance.kd_scores``. ``max_group_ratio``: with ``global_rank``, no group loses more
    than this fraction of its channels (raised to ``ratio`` when ``ratio`` is higher).

    ``prune_normalized`` (or the recipe key ``"prune_normalized": true``) also cuts hidden sizes that
    LayerNormalization normalises (a transformer's residual stream, with its embedding tables): the
    student is then the network at a smaller width, not the teacher with channels zeroed.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise OnnxkdError(f"--ratio {ratio!r}: expected a number, got {type(ratio).__name__}")
    if not 0 <= ratio < 1:
        raise OnnxkdError(f"--ratio {ratio}: must be in [0, 1)")
    prune_normalized = prune_normalized or bool((recipe or {}).get("prune_normalized", False))
    teacher = load(model)
    refuse_quantized(teacher, describe(model), QUANTIZED_ADVICE)
    input_shapes = _checked_shapes(input_shapes, teacher)
    prepared, groups = channel_groups(teacher, prune_normalized)
    names = {s.name for g in groups if g.prunable for s in g.slices}
    arrays = {name: prepared.graph.initializers[name].const_value.numpy() for name in names}
    scores = importance(groups, arrays, criterion, gradients, seed, scores)
    round_to = DEFAULT_ROUND_TO if round_to is None else round_to
    options = dict(global_rank=global_rank, ignore=ignore, recipe=recipe, max_group_ratio=max_group_ratio)
    plan = make_plan(groups, scores, ratio, round_to=round_to, **options)
    result = _rewrite(teacher, prepared, groups, plan, input_shapes, describe(model))
    # the plan at round-to 1 (argsorts of the scores, no rewrite) says which groups rounding alone left whole
    exact = make_plan(groups, scores, ratio, round_to=1, **options) if round_to > 1 else plan
    result.summary.update(round_to=round_to, whole_by_rounding=whole_by_rounding(groups, plan, exact))
    return result


def prune_with_plan(model: ModelLike, plan: Plan, input_shapes: dict[str, list[int]] | None = None,
                    prune_normalized: bool = False) -> PruneResult:
    """Apply a given plan (group id -> kept indices, e.g. from ``read_plan``) to ``model``.

    Group ids are those of the analysis with the same ``prune_normalized`` as the plan was made with.
    """
    teacher = load(model)
    refuse_quantized(teacher, describe(model), QUANTIZED_ADVICE)
    input_shapes = _checked_shapes(input_shapes, teacher)
    prepared, groups = channel_groups(teacher, prune_normalized)
    by_id = {g.id: g for g in groups}
    for gid, kept in plan.items():
        group = by_id.get(gid)
        if group is None or not group.prunable and len(kept) != group.size:
            raise OnnxkdError(f"plan group {gid}: not a prunable group of this model")
        if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= group.size:
            raise OnnxkdError(f"plan group {gid}: kept indices must be distinct, in [0, {group.size}), not empty")
    plan = {gid: sorted(int(i) for i in kept) for gid, kept in plan.items()}
    return _rewrite(teacher, prepared, groups, plan, input_shapes, describe(model))


def _checked_shapes(input_shapes, model: ir.Model) -> dict[str, tuple[int, ...]] | None:
    """``input_shapes`` (a mapping, or the flag's strings) checked against the model's inputs before any work,
    as the CLI checks --input-shape: an unknown name or a wrong rank gave MACs of None or 0 in the summary."""
    if input_shapes is None:
        return None
    interface = onnx.ModelProto(graph=onnx.GraphProto(input=[ir.serde.serialize_value(v) for v in model.graph.inputs]))
    return check_input_shapes(shape_overrides(input_shapes), input_specs(interface))


def _rewrite(teacher, prepared, groups, plan, input_shapes, label: str) -> PruneResult:
    apply_plan(prepared, groups, plan)
    student = RetieShapeConcatsPass()(RetieInitializersPass()(prepared).model).model
    try:
        student = ShapeInferencePass(strict_mode=False)(student).model
    except Exception:  # shapes are a convenience; the model is valid without them
        pass
    _keep_interface(teacher, student)
    student.metadata_props[PLAN_KEY] = plan_to_json(plan, groups)
    _check(student, label)
    summary = _summary(teacher, student, groups, plan, input_shapes)
    return PruneResult(student, plan, groups, summary)


class InvalidPrunedModel(RuntimeError):
    """The rewrite produced a model the ONNX checker rejects: a bug (exit 3), never the user's input."""


def _check(student: ir.Model, label: str) -> None:
    """The full ONNX checker on the pruned model (weights left out, so it works above 2 GB too)."""
    import onnx
    from onnx_ir.passes.common import _c_api_utils

    from onnxkd.model import graph_copy, weights_inside

    # call_onnx_api leaves out the big initializers; the small ones it serialises must carry their bytes, or
    # the checker looks for their external-data file in the current folder
    small_inside = weights_inside(graph_copy(student), max_bytes=_c_api_utils._BIG_TENSOR_SIZE_LIMIT)
    try:
        _c_api_utils.call_onnx_api(lambda proto: onnx.checker.check_model(proto, full_check=True), small_inside)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidPrunedModel(f"pruning {label} produced a model the ONNX checker rejects: {first}") from None


def _keep_interface(teacher: ir.Model, student: ir.Model) -> None:
    """Inputs and outputs keep the teacher's declared shapes (dynamic axes included): channels there are never cut."""
    declared = {v.name: v.shape for v in list(teacher.graph.inputs) + list(teacher.graph.outputs)}
    for value in list(student.graph.inputs) + list(student.graph.outputs):
        if value.name in declared and declared[value.name] is not None:
            value.shape = ir.Shape(list(declared[value.name]))


def read_plan(model: ModelLike) -> Plan:
    """The plan stored in a pruned model ({} for a model onnxkd did not prune)."""
    text = load(model).metadata_props.get(PLAN_KEY)
    return plan_from_json(text) if text else {}


def read_plan_details(model: ModelLike) -> dict:
    """The stored plan with each group's size, source node and member tensors (for distillation)."""
    text = load(model).metadata_props.get(PLAN_KEY)
    return json.loads(text) if text else {"version": 1, "groups": []}


def _summary(teacher: ir.Model, student: ir.Model, groups, plan, input_shapes) -> dict:
    pruned = sum(1 for g in groups if g.id in plan and len(plan[g.id]) < g.size)
    summary = {
        "groups": len(groups),
        "prunable": sum(1 for g in groups if g.prunable),
        "pruned": pruned,
        "frozen": sum(1 for g in groups if g.frozen is not None),
        "normalized_pruned": sum(1 for g in groups if g.normalized and g.id in plan and len(plan[g.id]) < g.size),
        "channels_before": sum(g.channels() for g in groups),
        "channels_after": sum(g.channels(len(plan[g.id]) if g.id in plan else None) for g in groups),
    }
    summary.update(measure(teacher, "before", input_shapes))
    summary.update(measure(student, "after", input_shapes))
    return summary


def measure(model: ir.Model, tag: str, input_shapes=None) -> dict:
    """params/MACs via the metrics pass (None where it cannot count)."""
    try:
        from onnxkd.graph_passes.metrics import count_macs, count_params
    except ImportError:
        return {f"params_{tag}": None, f"macs_{tag}": None}
    try:
        params = int(count_params(model))
    except Exception:
        params = None
    try:
        macs = int(sum(count_macs(model, input_shapes).values()))
    except Exception:
        macs = None
    return {f"params_{tag}": params, f"macs_{tag}": macs}
