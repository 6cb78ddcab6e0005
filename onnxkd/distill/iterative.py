"""Iterative pruning: reach the final ratio in K steps, distilling between them, re-scoring on the student.

Cutting half the channels at once removes a lot of function in one go; cutting them in K smaller steps
lets distillation repair each step before the next one is scored on the *current* student (criterion
``kd``: the teacher's sampled labels, see ``distill.importance``). The final channel count of every
group is fixed up front from the teacher (so ``--global``, ``--round-to``, ``--ignore`` and recipes
mean what they mean for one-shot pruning); step k keeps k/K of the way from the teacher's count to it.

Every step prunes the current student with a plan over *its* channel indices; composed with the
previous plan (``graph_passes.compose``) it maps to the teacher's indices, and that composed plan is
what the returned student stores, so feature hints still line up with the teacher.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx_ir as ir

from onnxkd.data import Dataset
from onnxkd.distill import checkpoint, step_progress
from onnxkd.distill.config import DistillConfig
from onnxkd.distill.importance import kd_scores
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.api import PLAN_KEY, channel_groups, prune, prune_with_plan
from onnxkd.graph_passes.prune.compose import compose, match_groups, step_counts
from onnxkd.graph_passes.prune.importance import importance
from onnxkd.graph_passes.prune.plan import Plan, plan_to_json
from onnxkd.model import ModelLike, load


@dataclass
class IterativeResult:
    model: ir.Model  # pruned to the final ratio (distilled between steps, not after the last one)
    plan: Plan  # teacher group id -> kept teacher channel indices (also stored in the model)
    steps: list[dict] = field(default_factory=list)  # per step: channels kept, seconds, distillation figures


def iterative_prune(teacher: ModelLike, ratio: float, steps: int, data: Dataset, *, val_data: Dataset | None = None,
                    criterion: str = "kd", distill: Callable[..., Any] | None = None,
                    config: DistillConfig | None = None, global_rank: bool = False, max_group_ratio: float = 0.9,
                    round_to: int | None = None,
                    ignore: str | None = None, recipe: dict | None = None, prune_normalized: bool = False,
                    seed: int = 0, progress: Any = None, work_dir: str | os.PathLike | None = None,
                    resume: bool = False) -> IterativeResult:
    """Prune ``teacher`` to ``ratio`` in ``steps`` steps, distilling with ``config`` between steps.

    ``criterion``: ``kd`` (re-scored on each student) or any data-free criterion of ``prune`` (l1, l2, bn,
    random), scored on each student's own weights. ``distill``: the function run between steps
    (``onnxkd.distill.api.distill``, injectable for tests); ``config`` its options (epochs per step).
    ``work_dir``: where each completed step (and the distillation between steps, by epoch) is saved;
    ``resume=True`` continues from there (``distill.step_progress``).
    """
    if steps < 1:
        raise OnnxkdError(f"--steps {steps}: must be >= 1")
    if criterion == "taylor":
        raise OnnxkdError("iterative pruning re-scores each student with kd (or a data-free criterion), not taylor")
    if distill is None:
        from onnxkd.distill.api import distill
    teacher_model = load(teacher)
    _, teacher_groups = channel_groups(teacher_model, prune_normalized)
    sizes = {g.id: g.size for g in teacher_groups}
    options = dict(global_rank=global_rank, max_group_ratio=max_group_ratio, round_to=round_to, ignore=ignore,
                   recipe=recipe, seed=seed, prune_normalized=prune_normalized)

    done = step_progress.resume(work_dir, ratio, steps) if resume and work_dir is not None else None
    measured = None
    if done is not None:
        current = done.student() if done.history else teacher_model
        if done.history and progress is not None:
            progress.print(f"      {_steps_done(done)}")
    else:
        measured = _scores(criterion, teacher_model, data, None, prune_normalized, seed)
        first = prune(teacher_model, ratio, criterion=criterion, **options, **measured)
        done = step_progress.start(work_dir, ratio, steps)
        done.final_counts = {gid: len(kept) for gid, kept in first.plan.items() if len(kept) < sizes[gid]}
        done.save()
        current = teacher_model

    def distill_last_step(student: ir.Model, resuming: bool) -> ir.Model:
        """The distillation after a step, trained on the saved file when there is one (a resumed run's epoch
        checkpoint names that file's hash); the distilled student, as read back from its own file."""
        recorded = {} if done.folder is None else dict(
            work_dir=done.distill_dir, resume=resuming and checkpoint.path_in(done.distill_dir).exists())
        result = distill(teacher_model, done.model_path() if done.folder else student, data, val_data=val_data,
                         config=config, progress=progress, **recorded)
        done.history[-1].update(distill_s=result.wall_s, best=result.best)
        done.distilled = True
        return done.save(result.model)

    if not done.distilled:  # stopped during the distillation after the last step it pruned
        current = distill_last_step(current, resuming=True)
    for step in range(len(done.history) + 1, steps + 1):
        started = time.perf_counter()
        counts = step_counts(done.final_counts, sizes, step, steps)
        # the teacher's scores serve the first step; later steps re-score the distilled student
        pruned, step_plan, to_teacher = _prune_step(current, teacher_groups, counts, criterion, data, teacher_model,
                                                    prune_normalized, seed + step, measured if step == 1 else None)
        done.composed = compose(done.composed, step_plan, to_teacher, sizes)
        pruned.metadata_props[PLAN_KEY] = plan_to_json(done.composed, teacher_groups)
        done.history.append({"step": step, "channels": sum(len(k) for k in done.composed.values()),
                             "teacher_channels": sum(sizes[g] for g in done.composed),
                             "prune_s": time.perf_counter() - started})
        if step < steps and config is not None:
            done.distilled = False
            pruned = distill_last_step(done.save(pruned), resuming=False)
        current = pruned
    return IterativeResult(current, done.composed, done.history)


def _steps_done(done: step_progress.StepProgress) -> str:
    """'prune step 1 of 3: done before, resuming', or '... resuming the distillation after step 1'."""
    k = len(done.history)
    said = f"prune step 1 of {done.steps}" if k == 1 else f"prune steps 1-{k} of {done.steps}"
    return f"{said}: done before, resuming" + ("" if done.distilled else f" the distillation after step {k}")


def _prune_step(current: ir.Model, teacher_groups, counts: dict[int, int], criterion: str, data: Dataset,
                teacher: ir.Model, prune_normalized: bool, seed: int,
                measured: dict | None) -> tuple[ir.Model, Plan, dict[int, int]]:
    """Score the current student and keep, in every group, its best ``counts`` channels.

    Returns the pruned model, the plan over the student's channel indices, and student -> teacher group ids.
    """
    prepared, groups = channel_groups(current, prune_normalized)
    to_teacher = match_groups(teacher_groups, groups)
    if measured is None:
        measured = _scores(criterion, current, data, teacher, prune_normalized, seed)
    arrays = {s.name: prepared.graph.initializers[s.name].const_value.numpy()
              for g in groups if g.prunable for s in g.slices}
    scores = importance(groups, arrays, criterion, None, seed, measured.get("scores"))
    plan = {}
    for group in groups:
        teacher_gid = to_teacher.get(group.id)
        if teacher_gid not in counts or not group.prunable:
            continue
        keep = min(counts[teacher_gid], group.size)
        plan[group.id] = sorted(int(i) for i in np.argsort(-scores[group.id], kind="stable")[:keep])
    return prune_with_plan(current, plan, prune_normalized=prune_normalized).model, plan, to_teacher


def _scores(criterion: str, model: ir.Model, data: Dataset, teacher: ir.Model | None, prune_normalized: bool,
            seed: int) -> dict:
    if criterion != "kd":
        return {}
    return {"scores": kd_scores(model, data, teacher=teacher, prune_normalized=prune_normalized, seed=seed)}
