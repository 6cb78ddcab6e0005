"""``compress``: the whole job — prune, distill, validate, report — in one call. Orchestration only.

    teacher.onnx -> [prune] importance (kd with data) + plan + rewrite, in K steps with distillation between
                 -> [distill] BN recalibration + knowledge distillation from the teacher, written back to ONNX
                 -> [optimize] written-out activations fused, dead weight dropped (checked on onnxruntime)
                 -> [validate] onnxruntime against the ORIGINAL teacher file, on held-out data; the teacher
                               optimized alone is timed too, so fusion gains are not taken for pruning gains
                 -> [report] report.json / .md / .html, the student and its recipe moved into place

Everything a stage makes goes to the work folder first (``<student>.work``): the student, the report
and the recipe are moved into place only once every stage succeeded, so Ctrl-C or a failing stage
leaves none of them behind, and ``resume=True`` picks up after the last completed stage (or epoch:
distillation checkpoints its own progress there). The algorithms live in graph_passes, distill,
validate and report; this module only calls them in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import onnx_ir as ir

from onnxkd import model as model_io
from onnxkd import freed_memory, work_lock
from onnxkd.data import (SAME_DATA_WARNING, DataLike, Dataset, ImageOptions, align_classes, as_dataset,
                         data_identity, input_specs, reference_shapes, same_data)
from onnxkd.errors import OnnxkdError
from onnxkd.json_file import write_json
from onnxkd.model import ModelLike
from onnxkd.recipe import FLAT_OPTIONS, PruneOptions, Recipe, ValidateOptions, load_recipe, save_recipe

STATE = "compress-state.json"
STEPS = "prune-steps"  # --steps K: each completed step, for --resume


@dataclass
class CompressResult:
    model: ir.Model = field(repr=False)  # the student
    student: str  # where it was written
    report_dir: str | None
    recipe_path: str
    report: dict = field(repr=False)  # report.json: the validation figures plus the "compress" section

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    def to_dict(self) -> dict:
        return self.report


def compress(teacher: ModelLike, ratio: float | None = None, data: DataLike = None, *, output=None, report=None,
             val_data: DataLike = None, recipe: Recipe | str | os.PathLike | dict | None = None, work_dir=None,
             resume: bool = False, image_options: ImageOptions | None = None, input_shapes: dict | None = None,
             progress: Any = None, transform: Callable | None = None, columns: Any = None,
             **options: Any) -> CompressResult | None:
    """Prune ``teacher`` at ``ratio``, distil the student on ``data``, validate it with onnxruntime, report.

    Under torchrun, rank 0 does all of it and returns the result; the other ranks distil with it, write nothing
    and return None.

    ``output`` defaults to ``<teacher>.student.onnx`` and ``report`` to a folder beside the student, named after
    it (``small.onnx``: ``small.report``; ``<teacher>.student.onnx``: ``<teacher>.report``; ``report=False``: none). ``recipe``: a ``Recipe``, its dict or a JSON path; ``options`` override it —
    ``ratio``, ``criterion``, ``steps`` (prune steps), ``epochs``, ``hints``, ``device``, the gates
    ``max_accuracy_drop``/``min_agreement``/``min_speedup``, ``seed``, ``optimize`` (default True), any of ``FLAT_OPTIONS``, or whole
    sections ``prune=``/``distill=``/``validate=`` as dicts. ``progress``: a rich Console or None.
    """
    started = time.perf_counter()
    plan = _recipe(recipe, dict(options, **({} if ratio is None else {"ratio": ratio})))
    output, report_dir, work = _paths(teacher, output, report, work_dir, {"data": data, "validation data": val_data})
    from onnxkd.distill import distributed

    world = distributed.init(plan.distill.device, timeout=FOLLOWER_WAIT)  # torchrun: every rank joins
    if not world.main:
        progress = None  # rank 0 alone prints
    say = _Say(progress)
    teacher_model = _load_teacher(teacher)
    specs = input_specs(ir.to_proto(teacher_model))
    train, val, held_out = _datasets(data, val_data, specs, plan.seed, image_options=image_options,
                                     transform=transform, columns=columns)
    _refuse_early(plan, train, val, teacher_model, teacher, specs, "--val-data" if val_data is not None else "--data")
    _timed_batch(plan, specs, say)
    # Every stage that needs sizes (MACs, the optimize check, timing) uses these: the user's samples give
    # the dynamic dims (a PaddlePaddle or tf2onnx export's height and width), --input-shape overrides them.
    samples = train if train is not None else val
    input_shapes = reference_shapes(specs, input_shapes, samples.sample_shapes() if samples is not None else None)
    if not world.main:
        return _follow(teacher, train, val, work, input_shapes, world)
    teacher_sha = model_io.sha256_of(teacher)
    fingerprint = {"teacher": teacher_sha, "recipe": _trajectory(plan),
                   "data": {"train": data_identity(train), "val": data_identity(val)}}
    state = _State(work, fingerprint, resume)
    stages: list[dict] = []
    total = 6 if plan.quantize.enabled else 5  # the stages say "[n/total]"
    if held_out:
        say(f"no --val-data: {len(val):,} of {len(train) + len(val):,} samples (10%, seed {plan.seed}) are held out "
            "for validation and never trained on")
    trained_on = same_data(data, val_data)
    if trained_on:
        say(f"[yellow]warning[/]: {SAME_DATA_WARNING}")

    # ------------------------------------------------------------------ 1. prune
    pruned_path = work / "pruned.onnx"
    if state.done("prune"):
        prune_info = state.results["prune"]
        # a searched candidate stays found
        plan.prune.ratio, plan.prune.target_speedup = prune_info["ratio"], None
        plan.prune.round_to = prune_info.get("round_to", plan.prune.round_to)
        plan.prune.criterion = prune_info.get("criterion", plan.prune.criterion)
        plan.prune.group_ratios = prune_info.get("group_ratios", plan.prune.group_ratios)
        say(f"[1/{total}] prune: done before ({pruned_path}), resuming")
    else:
        aim = (f"target speed-up {plan.prune.target_speedup:g}x at batch {plan.prune.latency_batch}"
               if plan.prune.target_speedup is not None else f"ratio {plan.prune.ratio:g}")
        say(f"[1/{total}] prune: {aim}, criterion {plan.prune.criterion_for(train is not None)}"
            + (f", {plan.prune.steps} steps" if plan.prune.steps > 1 else ""))
        clock = time.perf_counter()
        with distributed.alone():  # under torchrun the other ranks wait: the steps' distillations run here only
            pruned_model, prune_info = _prune(teacher_model, plan, train, val, input_shapes, progress,
                                              steps_dir=work / STEPS, resume=resume)
        if not prune_info["summary"]["pruned"] and plan.prune.ratio > 0 and not plan.quantize.enabled:
            _clear(work)  # a student that is the teacher is not worth distilling, validating and reporting
            with contextlib.suppress(OSError):
                work.rmdir()
            raise OnnxkdError(nothing_to_cut(teacher, prune_info))
        model_io.save(pruned_model, pruned_path)
        del pruned_model  # distillation reads pruned.onnx
        prune_info["seconds"] = time.perf_counter() - clock
        state.complete("prune", prune_info)
        shutil.rmtree(work / STEPS, ignore_errors=True)  # the steps' students: pruned.onnx holds the last
        freed_memory.release()  # each stage starts without what the ones before it freed
    stages.append(_stage("prune", prune_info["seconds"], _describe_prune(prune_info)))
    say(f"      {stages[-1]['detail']} ({prune_info['seconds']:.1f} s)")
    from onnxkd.graph_passes.prune.plan import rounding_note

    rounded = rounding_note(prune_info["summary"])
    if rounded:
        say(f"      note: {rounded}")

    # ------------------------------------------------------------------ 2. distill
    student_path = work / "student.onnx"
    if state.done("distill"):
        distilled = state.results["distill"]
        say(f"[2/{total}] distill: done before ({student_path}), resuming")
        distributed.share(None, world)  # torchrun: the other ranks have nothing to do
    elif not prune_info["summary"]["pruned"] and plan.quantize.enabled:
        # nothing was cut: the teacher is quantized as it is (distilling it retrained it into another model)
        distilled = {"skipped": NOTHING_CUT_INT8, "wall_s": 0.0, "steps": 0, "epochs": 0, "best_epoch": None,
                     "best": None, "history": []}
        say(f"[2/{total}] distill: skipped, {NOTHING_CUT_INT8}")
        distributed.share(None, world)
        model_io.save(model_io.load(pruned_path), student_path)
        state.complete("distill", distilled)
    else:
        say(f"[2/{total}] distill")
        from onnxkd.distill import checkpoint

        resumed = resume and checkpoint.path_in(work / "distill").exists()
        distributed.share({"resume": resumed, "config": plan.distill}, world)  # torchrun: the other ranks join
        result = _distill(teacher, work, train, val, input_shapes, resumed, plan.distill, progress)
        distilled = {k: v for k, v in result.to_dict().items() if k != "config"}
        # distill was given compress's split: whether its validation samples were held out is compress's to say
        distilled["data"]["val"]["held_out"] = held_out
        state.complete("distill", distilled)
        del result
        freed_memory.release()
    distributed.leave(world)  # torchrun: rank 0 goes on alone
    stages.append(_stage("distill", distilled["wall_s"], _describe_distill(distilled)))

    # ------------------------------------------------------------------ 3. optimize
    final_path, optimized = student_path, None
    if plan.optimize:
        final_path = work / "optimized.onnx"
        if state.done("optimize"):
            optimized = state.results["optimize"]
            say(f"[3/{total}] optimize: done before ({final_path}), resuming")
        else:
            say(f"[3/{total}] optimize: fuse written-out activations, drop dead weight")
            clock = time.perf_counter()
            optimized = _optimize(student_path, final_path, input_shapes, val)
            optimized["seconds"] = time.perf_counter() - clock
            state.complete("optimize", optimized)
            freed_memory.release()
        stages.append(_stage("optimize", optimized["seconds"], _describe_optimize(optimized)))

    # ------------------------------------------------------------------ 4. quantize (--int8)
    quantized = None
    if plan.quantize.enabled:
        int8_path = work / "int8.onnx"
        if state.done("quantize"):
            quantized = state.results["quantize"]
            say(f"[4/{total}] quantize: done before ({int8_path}), resuming")
        else:
            say(f"[4/{total}] quantize: int8 where it is measured faster, within "
                f"{plan.quantize.max_accuracy_drop:.2%} of the float student")
            clock = time.perf_counter()
            quantized = _quantize(teacher, final_path, int8_path, train if train is not None else val, plan,
                                  input_shapes, progress, say)
            quantized["seconds"] = time.perf_counter() - clock
            state.complete("quantize", quantized)
            freed_memory.release()
        stages.append(_stage("quantize", quantized["seconds"], _describe_quantize(quantized)))
        final_path = int8_path

    # ------------------------------------------------------------------ 5. validate
    say(f"[{total - 1}/{total}] validate with onnxruntime against the original teacher")
    clock = time.perf_counter()
    validation = _validate(teacher, final_path, val, plan.validate, input_shapes, plan.seed, progress)
    freed_memory.release()
    if plan.optimize:  # the same protocol on the teacher optimized alone: what fusion gives without pruning
        teacher_optimized = work / "teacher.optimized.onnx"
        _optimize(teacher, teacher_optimized, input_shapes, val)
        timing_only = replace(plan.validate, max_accuracy_drop=None, min_agreement=None, min_speedup=None)
        fusion_alone = _validate(teacher, teacher_optimized, None, timing_only, input_shapes, plan.seed, progress)
        optimized["latency"] = _latency_split(validation, fusion_alone)
    pruned_quality = None
    if val is not None:  # what distillation bought: the same figures for the pruned student before it
        from onnxkd.validate.api import compare_quality

        pruned_quality = compare_quality(teacher, pruned_path, val, batch_size=plan.validate.batch_size,
                                         provider=plan.validate.provider, threads=plan.validate.threads,
                                         seed=plan.seed)
    stages.append(_stage("validate", time.perf_counter() - clock, _describe_validation(validation)))
    slow = slower_student_note(validation["speedup"], prune_info)
    if slow:
        say(f"      note: {slow}")

    # ------------------------------------------------------------------ 4. report, then everything into place
    say(f"[{total}/{total}] report")
    student_model = model_io.load(final_path)
    # the student keeps the teacher's format: weights beside it in <output>.data when the teacher's were external
    external = model_io.has_external_data(teacher) or None
    # written now as it will stand at the output (its weights file named after it), renamed into place last:
    # the report gives the hash and size of the file delivered, not of the work folder's copy
    pending = model_io.prepare_save(student_model, output, external_data=external)
    try:
        validation["student"].update(path=str(output), sha256=model_io.sha256_file(pending.staged),
                                     size_bytes=pending.size_bytes)
        prune_info["layers"] = _layers(teacher_model, student_model, validation)
        body = dict(validation)
        body["compress"] = {"stages": stages, "prune": prune_info, "distill": distilled, "optimize": optimized,
                            "quantize": quantized,
                            "pruned_quality": pruned_quality,
                            "recipe": plan.to_dict(teacher_sha), "held_out": held_out, "val_is_train": trained_on,
                            "wall_s": time.perf_counter() - started}
        staged_report = None
        if report_dir is not None:
            from onnxkd.report import write_report

            staged_report = work / "report"
            write_report(body, staged_report)
        recipe_path = output.with_name(output.name.removesuffix(".onnx") + ".recipe.json")
        save_recipe(plan, work / "recipe.json", teacher_sha)
        _move_into_place(work, pending, staged_report, report_dir, recipe_path)
    except BaseException:  # a failed or interrupted report leaves no student file behind either
        pending.abort()
        raise
    # read from where it now lies: the work folder's weights file it was loaded from is gone
    return CompressResult(model_io.load(output), str(output), None if report_dir is None else str(report_dir),
                          str(recipe_path), body)


# --------------------------------------------------------------------------- the stages


def _distill(teacher, work: Path, train, val, input_shapes, resume: bool, config, progress):
    """pruned.onnx distilled into student.onnx, checkpointing in work/distill (every rank of a torchrun job)."""
    from onnxkd.distill.api import distill

    return distill(teacher, work / "pruned.onnx", train, work / "student.onnx", val_data=val,
                   work_dir=work / "distill", resume=resume, input_shapes=input_shapes, progress=progress,
                   config=config)


# --------------------------------------------------------------------------- torchrun: one run, several processes
# Rank 0 runs the pipeline and writes every file; the other ranks only train with it. They read the data as it
# does (the same split), wait while it prunes alone, distil with it from its pruned.onnx, and leave.
FOLLOWER_WAIT = timedelta(hours=12)  # how long the other ranks wait for rank 0's pruning (--steps distils too)


def _follow(teacher, train, val, work: Path, input_shapes, world) -> None:
    """A rank other than 0: distil with rank 0 if it says so (its ``distributed.share`` before distilling)."""
    from onnxkd.distill import distributed

    told = distributed.share(None, world)
    if told is not None:
        _distill(teacher, work, train, val, input_shapes, told["resume"], told["config"], None)
    distributed.leave(world)


def _prune(teacher: ir.Model, plan: Recipe, train: Dataset | None, val: Dataset | None, input_shapes,
           progress, steps_dir: Path | None = None, resume: bool = False) -> tuple[ir.Model, dict]:
    """The pruned student and what the report says about it (``--steps K`` saves each step in ``steps_dir``,
    where ``resume`` continues)."""
    from onnxkd.graph_passes.api import channel_groups, measure, prune
    from onnxkd.graph_passes.prune.plan import DEFAULT_ROUND_TO

    options = plan.prune
    criterion = options.criterion = options.criterion_for(train is not None)  # the recipe saves what was used
    if options.round_to is None and options.target_speedup is None:
        options.round_to = DEFAULT_ROUND_TO  # the recipe saves what was used, should the default change

    def common() -> dict:
        return dict(global_rank=options.global_rank, max_group_ratio=options.max_group_ratio,
                    round_to=options.round_to, ignore=options.ignore, recipe=options.plan_recipe(), seed=plan.seed,
                    prune_normalized=options.prune_normalized)

    one_shot_scores = options.steps == 1 or options.target_speedup is not None
    measured = _measured(criterion, teacher, train, options, plan.seed, progress) if one_shot_scores else {}
    search = None
    if options.target_speedup is not None:  # the ratio is found by timing candidates, then used as if given
        def prune_at(at: float, round_to: int | None = options.round_to, group_ratios: dict | None = None) -> ir.Model:
            given = common()
            if group_ratios:
                given["recipe"] = dict(given["recipe"], group_ratios=group_ratios)
            return prune(teacher, at, criterion=criterion, **dict(given, round_to=round_to), **measured).model

        search = _search(teacher, plan, prune_at, input_shapes, progress)
        if search.warning:
            _Say(progress)(f"      note: {search.warning}")
        # the saved recipe replays the candidate found, without timing
        options.ratio, options.round_to, options.target_speedup = search.ratio, search.round_to, None
        options.group_ratios = {str(gid): r for gid, r in search.group_ratios.items()}
    if options.steps > 1:
        from onnxkd.distill.iterative import iterative_prune

        between = replace(plan.distill, epochs=_epochs_between(plan.distill, train, options.steps), steps=None,
                          hints=[])
        result = iterative_prune(teacher, options.ratio, options.steps, train, val_data=val, criterion=criterion,
                                 config=between, progress=progress, work_dir=steps_dir, resume=resume, **common())
        model, kept, steps, rounded = result.model, result.plan, result.steps, []
    else:
        one_shot = prune(teacher, options.ratio, criterion=criterion, **common(), **measured)
        model, kept, steps = one_shot.model, one_shot.plan, []
        rounded = one_shot.summary["whole_by_rounding"]
    _, groups = channel_groups(teacher, options.prune_normalized)
    summary = {"groups": len(groups), "prunable": sum(g.prunable for g in groups),
               "pruned": sum(1 for g in groups if g.id in kept and len(kept[g.id]) < g.size),
               "frozen": sum(g.frozen is not None for g in groups),
               "channels_before": sum(g.channels() for g in groups),
               "channels_after": sum(g.channels(len(kept[g.id]) if g.id in kept else None) for g in groups),
               "round_to": options.round_to, "whole_by_rounding": rounded}
    summary.update(measure(teacher, "before", input_shapes))
    summary.update(measure(model, "after", input_shapes))
    rows = [{"id": g.id, "source": g.source, "size": g.size, "channels": g.channels(),
             "kept": len(kept[g.id]) if g.id in kept else g.size,
             "status": "frozen" if g.frozen is not None else
                       ("pruned" if g.id in kept and len(kept[g.id]) < g.size else "whole"),
             "reason": g.frozen or ("single channel" if g.size < 2 else
                                    f"round-to {options.round_to}" if g.id in rounded else "")} for g in groups]
    return model, {"criterion": criterion, "ratio": options.ratio, "round_to": options.round_to,
                   "group_ratios": dict(options.group_ratios), "steps": steps, "summary": summary, "groups": rows,
                   "speed_search": search.to_dict() if search is not None else None}


def nothing_to_cut(teacher: ModelLike, prune_info: dict) -> str:
    """Why pruning left every channel group whole, in one line (compress stops there: a student that is the
    teacher is not worth distilling)."""
    from onnxkd.graph_passes.prune.plan import nothing_cut

    name = Path(teacher).name if isinstance(teacher, (str, os.PathLike)) else "the teacher"
    why = nothing_cut(prune_info["summary"], [r["reason"] for r in prune_info["groups"] if r["status"] == "frozen"])
    return (f"nothing to cut in {name} at ratio {prune_info['ratio']:g}: {why}. `onnxkd inspect` lists each group "
            "and why; --int8 would still quantize it")


def _search(teacher: ir.Model, plan: Recipe, prune_at, input_shapes, progress):
    """The candidate meeting ``target_speedup`` with the most MACs kept, timed like validation times (provider,
    threads, protocol), candidates optimized when the student will be; round-to 1, 8 and 16 are tried when
    the recipe gives no round-to (16 for a student to be quantized), and groups are timed whole with
    ``per_group``."""
    from onnxkd.graph_passes.api import groups_by_weight
    from onnxkd.validate.latency import LatencyProtocol
    from onnxkd.validate.sessions import SessionConfig
    from onnxkd.validate.speed_search import round_to_values, timed_search

    v, p = plan.validate, plan.prune
    say = _Say(progress)

    def report(at: float, candidate) -> None:
        if candidate is not None:
            say(f"      candidate {candidate.label}: speed-up {candidate.speedup:.2f}x")

    int8 = plan.quantize.enabled
    if int8 and p.round_to is None:
        say(f"      round-to {', '.join(map(str, round_to_values(None, int8)))}: the student will be int8, whose "
            "fast convolutions need 16+ channels in multiples of 8")

    return timed_search(teacher, prune_at, p.target_speedup, max_ratio=p.max_ratio, batch=p.latency_batch,
                        session_config=SessionConfig(v.provider, v.threads, v.graph_opt),
                        protocol=LatencyProtocol(warmup=v.warmup, runs=v.runs, budget_s=v.time_budget),
                        optimize_candidates=plan.optimize, input_shapes=input_shapes, progress=report,
                        round_to=round_to_values(p.round_to, int8),
                        per_group=groups_by_weight(teacher, p.ignore, p.plan_recipe()) if p.per_group else (),
                        max_trials=p.group_trials)


def _measured(criterion: str, teacher: ir.Model, train: Dataset | None, options: PruneOptions, seed: int,
              progress) -> dict:
    """Scores (kd) or gradients (taylor) measured on the training data; nothing for the other criteria."""
    if criterion == "kd":
        from onnxkd.distill.importance import kd_scores

        return {"scores": kd_scores(teacher, train, prune_normalized=options.prune_normalized, seed=seed,
                                    progress=progress)}
    if criterion == "taylor":
        from onnxkd.graph_passes.normalize.prepare import prepare
        from onnxkd.torch_bridge.gradients import initializer_gradients

        return {"gradients": initializer_gradients(prepare(teacher), train, max_batches=32, progress=progress)}
    return {}


def _epochs_between(config, train: Dataset | None, steps: int) -> int:
    """Distillation between pruning steps: a share of the final run (at least one epoch per step)."""
    from onnxkd.distill.api import default_epochs

    final = config.epochs or default_epochs(len(train) if train is not None else config.data_free_samples,
                                            config.batch_size)
    return max(1, final // (2 * steps))


def _validate(teacher: ModelLike, student: Path, val: Dataset | None, options: ValidateOptions, input_shapes,
              seed: int, progress) -> dict:
    from onnxkd.validate.api import validate

    bars = _stage_bars(progress)
    with bars as update:
        result = validate(teacher, student, val, batch_size=options.batch_size, provider=options.provider,
                          threads=options.threads, graph_opt=options.graph_opt, input_shapes=input_shapes,
                          warmup=options.warmup, runs=options.runs, budget_s=options.time_budget,
                          max_accuracy_drop=options.max_accuracy_drop, min_agreement=options.min_agreement,
                          min_speedup=options.min_speedup, seed=seed, progress=update)
    return result.to_dict()


def _quantize(teacher: ModelLike, student: Path, target: Path, data: Dataset | None, plan: Recipe, input_shapes,
              progress, say) -> dict:
    """``onnxkd quantize`` on the float student (QAD from the original teacher where PTQ loses more than the
    budget), written to ``target``: the int8 model, or the float one where int8 did not pay."""
    from onnxkd.qat import qad_refiner
    from onnxkd.quantize.api import quantize

    q = plan.quantize
    refine = None
    if q.qat and data is not None:
        refine = qad_refiner(teacher, learn_scales=q.learn_scales, epochs=q.qat_epochs, lr=q.qat_lr,
                             batch_size=plan.distill.batch_size, device=plan.distill.device, seed=plan.seed,
                             progress=progress)
    result = quantize(student, data, random_data=data is None, activation_type=q.activation_type,
                      calibration=q.calibration, calibration_samples=q.calibration_samples,
                      eval_samples=q.eval_samples, max_accuracy_drop=q.max_accuracy_drop,
                      batch_size=plan.validate.batch_size, provider=plan.validate.provider,
                      threads=plan.validate.threads, seed=plan.seed, input_shapes=input_shapes, refine=refine,
                      scope=q.scope,
                      log=lambda message: say(f"      {message}"))
    model_io.save(result.model, target)
    return result.to_dict()


def _describe_quantize(info: dict) -> str:
    if not info["int8"]:
        return "float kept: " + info["notes"][-1]  # the verdict; the notes before it are asides, in the report
    from onnxkd.quantize.search import describe

    speed = describe(info["speedups"])
    floats = f", {len(info['float_nodes'])} node(s) kept float" if info["float_nodes"] else ""
    how = " after QAD" if info.get("qat") and info["qat"]["kept"] else ""
    return f"{info['quantized_nodes']} of {info['compute_nodes']} compute nodes int8{how}{floats}; {speed} over float"


def _optimize(source: ModelLike, target: Path, input_shapes, samples: Dataset | None) -> dict:
    """``onnxkd optimize`` on ``source``, checked against it on onnxruntime (on ``samples`` when there are
    some), written to ``target``."""
    from onnxkd.graph_passes.optimize import optimize
    from onnxkd.validate.equivalence import check_same_function

    result = optimize(source)
    check = check_same_function(source, result.model, "the optimized student", input_shapes, samples)
    model_io.save(result.model, target)
    return dict(result.summary, check=check)


def _latency_split(validation: dict, fusion_alone: dict) -> dict:
    """p50 latencies of teacher, teacher optimized and student, per batch size, with the speed-ups apart:
    fusion alone (teacher vs teacher optimized) and the whole (teacher vs student). Each speed-up is a
    ratio of one interleaved pair, so the two runs' drift does not leak into it. The teacher-optimized
    latency shown is the teacher's p50 of the main run divided by the fusion speed-up, so the three
    latencies of a row divide into its speed-ups; what its own run measured is kept beside it."""
    rows = []
    for key in ("latency_ms", "latency_ms_batched"):
        whole, fused = validation["teacher"].get(key), fusion_alone["student"].get(key)
        if not whole or not fused:
            continue
        speed = validation["speedup"] if key == "latency_ms" else validation["speedup"]["batched"]
        fusion = fusion_alone["speedup"] if key == "latency_ms" else fusion_alone["speedup"]["batched"]
        rows.append({"batch_size": speed["batch_size"], "teacher_ms": whole["p50"],
                     "teacher_optimized_ms": whole["p50"] / fusion["p50"], "teacher_optimized_measured_ms": fused["p50"],
                     "student_ms": validation["student"][key]["p50"], "fusion_speedup": fusion["p50"],
                     "speedup": speed["p50"]})
    return {"rows": rows}


def _layers(teacher: ir.Model, student: ir.Model, validation: dict) -> list[dict]:
    """Per MAC layer: channels (from the validation) and MACs at the measured batch-1 shape, teacher vs student."""
    from onnxkd.graph_passes.metrics import macs_by_node

    shapes = {i["name"]: i["measured_shape"] for i in validation["teacher"]["inputs"]}
    t_macs, s_macs = macs_by_node(teacher, shapes), macs_by_node(student, shapes)
    return [dict(row, macs_teacher=t_macs.get(row["layer"]), macs_student=s_macs.get(row["layer"]))
            for row in validation["channels"]]


# --------------------------------------------------------------------------- set-up


def _recipe(recipe, options: dict) -> Recipe:
    """The recipe (file, dict or object; defaults without one) with the keyword options applied on top."""
    if recipe is None:
        plan = Recipe()
    elif isinstance(recipe, Recipe):
        plan = Recipe.from_dict(recipe.to_dict())  # a copy: the caller's object is not changed
    elif isinstance(recipe, dict):
        plan = Recipe.from_dict(recipe)
    else:
        plan = load_recipe(recipe)[0]
    sections = {"prune": plan.prune, "distill": plan.distill, "validate": plan.validate, "quantize": plan.quantize}
    for name, value in options.items():
        if name == "seed":
            plan.seed = int(value)
        elif name == "optimize":
            plan.optimize = bool(value)
        elif name in sections:
            for key, item in dict(value).items():
                _set(sections[name], key, item, name)
        elif name in FLAT_OPTIONS:
            section, key = FLAT_OPTIONS[name]
            _set(sections[section], key, value, section)
        else:
            raise OnnxkdError(f"compress: unknown option {name!r}")
    if "ratio" in options and options.get("target_speedup") is not None:
        raise OnnxkdError("compress: ratio and target_speedup exclude each other: give one")
    plan.distill = replace(plan.distill, seed=plan.seed)  # one seed for the run; also re-checks the options
    plan.prune.check()
    return plan


def _set(section, key: str, value, where: str) -> None:
    if not hasattr(section, key):
        raise OnnxkdError(f"compress: unknown {where} option {key!r}")
    setattr(section, key, list(value) if key == "hints" else value)


def _paths(teacher, output, report, work_dir, data: dict) -> tuple[Path, Path | None, Path]:
    source = Path(teacher) if isinstance(teacher, (str, os.PathLike)) else None
    if output is None:
        if source is None:
            raise OnnxkdError("compress: give output= for a teacher that is not a file")
        output = source.with_name(source.name.removesuffix(".onnx") + ".student.onnx")
    output = model_io.check_output_path(output, {"teacher": teacher}, data=data)
    if report is None:
        # Beside the student, not the teacher: the teacher's folder may be read-only or shared, and two students
        # of one teacher keep a report each. teacher.student.onnx -> teacher.report; small.onnx -> small.report.
        report = output.with_name(output.name.removesuffix(".onnx").removesuffix(".student") + ".report")
    report_dir = Path(report) if report not in (None, False) else None
    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise OnnxkdError(f"--report {report_dir}: exists and is not a folder")
    work = Path(work_dir) if work_dir is not None else output.with_name(output.name + ".work")
    return output, report_dir, work


def _load_teacher(teacher: ModelLike) -> ir.Model:
    from onnxkd.graph_passes.analyze.quantized import QUANTIZED_ADVICE, refuse_quantized

    try:
        model = model_io.load(teacher)
    except OnnxkdError as exc:
        raise OnnxkdError(f"teacher: {exc}") from None
    refuse_quantized(model, f"teacher {model_io.describe(teacher)}", QUANTIZED_ADVICE)
    return model


def _datasets(data, val_data, specs, seed: int, **read) -> tuple[Dataset | None, Dataset | None, bool]:
    """(train, val, held_out): the data split once, so distillation never sees the validation samples.
    ``read``: as_dataset's options (image_options, transform, columns)."""
    if data is None:
        return None, as_dataset(val_data, specs, **read) if val_data is not None else None, False
    train = as_dataset(data, specs, **read)
    if val_data is not None:
        return train, align_classes(train, as_dataset(val_data, specs, **read)), False
    from onnxkd.distill.batches import split_holdout

    train, val = split_holdout(train, 0.1, seed)
    return train, val, True


def _refuse_early(plan: Recipe, train: Dataset | None, val: Dataset | None, teacher: ir.Model,
                  source: ModelLike, specs: list, val_flag: str = "--data") -> None:
    """What would only fail later (a criterion without data, an absent provider, a gate the data cannot
    measure, a hint on a tensor the teacher does not have), refused before any stage runs."""
    from onnxkd.distill.hints import AUTO, tensor_names
    from onnxkd.validate.gates import Gates
    from onnxkd.validate.label_check import check_label_classes
    from onnxkd.validate.sessions import resolve_providers

    plan.prune.criterion_for(train is not None)
    missing = [name for name in plan.distill.hints if name != AUTO and name not in tensor_names(teacher)]
    if missing:  # (the student, cut from the teacher, keeps its tensor names)
        raise OnnxkdError(f"--hint {missing[0]}: no tensor of that name in the teacher graph")
    check_label_classes(source, specs, [d for d in (train, val) if d is not None])
    options = plan.validate
    resolve_providers(options.provider)
    gates = Gates(options.max_accuracy_drop, options.min_agreement, options.min_speedup)
    gates.check_measurable(val is not None, val is not None and val.labels is not None, val_flag)


def _timed_batch(plan: Recipe, specs, say) -> None:
    """--latency-batch as the teacher can run it: one that fixes its batch (torch's default export of a batch-1
    example) is timed at that batch, which the terminal, the report and the recipe then say."""
    from onnxkd.validate.inference import batch_limit

    wanted = plan.prune.latency_batch
    runs = batch_limit(specs, wanted)
    if plan.prune.target_speedup is not None and runs != wanted:
        plan.prune.latency_batch = runs
        say(f"the teacher fixes its batch at {runs}: --latency-batch {wanted} is timed at batch {runs}")


def _trajectory(plan: Recipe) -> dict:
    """The recipe minus what does not change the student (validation, device, caching)."""
    recipe = plan.to_dict()
    recipe.pop("validate")
    for key in ("device", "compile", "compile_backend", "cache_mb", "workers"):
        recipe["distill"].pop(key, None)
    return recipe


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """``distill.epochs 400 -> 401`` for each setting that differs between two recipes (nested dicts)."""
    found = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b and key not in ("onnxkd_version", "teacher_sha256"):
            found.append(f"{prefix}{key} {json.dumps(a)} -> {json.dumps(b)}")
    return found


class _State:
    """Which stages a run completed, in the work folder, for ``resume``."""

    def __init__(self, work: Path, fingerprint: dict, resume: bool):
        self.path, self.fingerprint = work / STATE, fingerprint
        self.results: dict[str, dict] = {}
        work_lock.acquire(work)  # before anything in the folder is read or cleared
        if resume:
            if not self.path.exists():
                raise OnnxkdError(f"--resume: no interrupted run in {work}; run without --resume")
            saved = json.loads(self.path.read_text())
            if saved.get("fingerprint") != fingerprint:
                before = saved.get("fingerprint", {})
                changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
                details = _differences(before.get("recipe") or {}, fingerprint["recipe"]) if "recipe" in changed else []
                shown = f" ({'; '.join(details[:4])})" if details else ""
                raise OnnxkdError(f"--resume: the run in {work} used another {', '.join(changed)}{shown}; "
                                  "run without --resume to start over")
            self.results = _with_their_files(work, saved.get("results", {}))
        else:
            _clear(work, keep_lock=True)  # a previous failed run's leftovers: start clean
        work.mkdir(parents=True, exist_ok=True)
        self._write()  # from the start: a run stopped in its first stage resumes too (its prune steps)

    def done(self, stage: str) -> bool:
        return stage in self.results

    def complete(self, stage: str, result: dict) -> None:
        self.results[stage] = result
        self._write()

    def _write(self) -> None:
        write_json(self.path, {"fingerprint": self.fingerprint, "results": self.results}, default=str)


# each stage's output in the work folder, in stage order: a stage whose file is gone is not done
STAGE_FILES = {"prune": "pruned.onnx", "distill": "student.onnx", "optimize": "optimized.onnx", "quantize": "int8.onnx"}


def _with_their_files(work: Path, results: dict) -> dict:
    """The completed stages up to the first whose output file is missing (a work folder emptied by hand while
    the run went on: resuming after it read 'student ... no such file' on every try)."""
    kept = {}
    for stage, name in STAGE_FILES.items():
        if stage not in results:
            continue
        if not (work / name).exists():
            break
        kept[stage] = results[stage]
    return kept


# what a run puts in its work folder (and all it ever deletes there: the folder may be the user's)
WORK_FILES = (STATE, STEPS, "pruned.onnx", "student.onnx", "optimized.onnx", "int8.onnx", "teacher.optimized.onnx", "recipe.json",
              "distill", "report")


def _clear(work: Path, keep_lock: bool = False) -> None:
    for name in WORK_FILES:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.suffix == ".onnx":
            model_io.remove(path)  # and its weights file
        elif path.exists():
            path.unlink()
    if not keep_lock:
        work_lock.release(work)
    with contextlib.suppress(OSError):
        work.rmdir()  # only when nothing else is in it


def _move_into_place(work: Path, student: model_io.PendingSave, staged_report: Path | None,
                     report_dir: Path | None, recipe_path: Path) -> None:
    """Renames, the student's last (written beside ``output`` already, as a pair named after it: a renamed
    work-folder model would still name its work-folder weights file): before it, a crash leaves the earlier
    outputs (if any) as they were. An existing report folder keeps whatever else is in it; its three report
    files are replaced. What would make a rename fail (a folder made where a file goes since the run started) is
    refused before the first one: a report and recipe beside no student, or beside an earlier run's, would lie."""
    for path in (student.path, recipe_path):
        if path.is_dir():
            raise OnnxkdError(f"{path}: is a directory now, where the run writes a file; nothing was written "
                              f"(the run's work is in {work})")
    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise OnnxkdError(f"--report {report_dir}: is a file now, where the run writes a folder; nothing was written "
                          f"(the run's work is in {work})")
    if staged_report is not None:
        if report_dir.exists():
            for item in staged_report.iterdir():
                os.replace(item, report_dir / item.name)
        else:
            report_dir.parent.mkdir(parents=True, exist_ok=True)  # --report a/b/c: made, as validate makes it
            os.replace(staged_report, report_dir)
    os.replace(work / "recipe.json", recipe_path)
    student.commit()
    _clear(work)


# --------------------------------------------------------------------------- what the terminal says


class _Say:
    def __init__(self, console):
        self.console = console

    def __call__(self, text: str) -> None:
        if self.console is not None and hasattr(self.console, "print"):
            self.console.print(text, highlight=False)


def _stage_bars(progress):
    if progress is None or not hasattr(progress, "is_terminal"):
        return contextlib.nullcontext(None)
    from onnxkd.report.progress import StageBars

    return StageBars(progress)


def _stage(name: str, seconds: float, detail: str) -> dict:
    return {"name": name, "seconds": seconds, "detail": detail}


def _describe_prune(info: dict) -> str:
    from onnxkd.report.fmt import count

    s = info["summary"]
    macs = f", MACs {count(s['macs_before'])} → {count(s['macs_after'])}" if s.get("macs_before") and s.get("macs_after") else ""
    return (f"{s['pruned']} of {s['groups']} channel groups cut ({s['frozen']} frozen), channels "
            f"{s['channels_before']:,} → {s['channels_after']:,}{macs}")


NOTHING_CUT_INT8 = "nothing was cut: the teacher goes on to int8 as it is"


def _describe_distill(info: dict) -> str:
    if info.get("skipped"):
        return f"skipped: {info['skipped']}"
    best = info.get("best") or {}
    figures = ", ".join([f"{k.replace('_', ' ')} {best[k]:.1%}" for k in ("accuracy", "agreement", "token_agreement")
                         if best.get(k) is not None]
                        + ([f"output error {best['output_error']:.3g}"] if best.get("output_error") is not None else []))
    best_epoch = ("no epoch beat the student before training, kept as it was" if info["best_epoch"] == 0
                  else f"best epoch {info['best_epoch']} of {info['epochs']}")
    return f"{info['steps']:,} steps, {best_epoch}" + (f" ({figures})" if figures else "")


def _describe_optimize(info: dict) -> str:
    fused = ", ".join(f"{count} {name}" for name, count in info["fused"].items() if count) or "nothing to fuse"
    check = info.get("check")
    checked = "" if check is None else \
        f"; check: max diff {check['max_abs_difference']:.1e} <= {check['tolerance']:.1e} ({check['inputs']})"
    return f"{fused}; nodes {info['nodes_before']:,} → {info['nodes_after']:,}{checked}"


def slower_student_note(speedup: dict, prune_info: dict) -> str | None:
    """Advice when a student pruned at a given ratio runs slower than its teacher (a searched one cannot)."""
    if prune_info.get("speed_search") is not None or not prune_info.get("ratio") or speedup["p50"] >= 1:
        return None
    from onnxkd.graph_passes.prune.plan import DEFAULT_ROUND_TO

    default = prune_info.get("round_to") in (None, DEFAULT_ROUND_TO)
    advice = "" if default else f"--round-to {DEFAULT_ROUND_TO} (the default), or "
    return (f"the student is {1 / speedup['p50']:.2f}x slower than the teacher at batch {speedup['batch_size']}: "
            "channel counts off onnxruntime's blocks of 8 or 16 channels can cost more than they save; try "
            f"{advice}--target-speedup, which times candidates")


def _describe_validation(r: dict) -> str:
    speed = r["speedup"]
    return f"speed-up p50 {speed['p50']:.2f}x at batch {speed['batch_size']}" + (
        f", {speed['batched']['p50']:.2f}x at batch {speed['batched']['batch_size']}" if speed.get("batched") else "")
