"""``validate(teacher, student, data=...)``: measure both models on onnxruntime and compare them.

The story: load both models -> fit the data -> create sessions alike -> quality on the data ->
interleaved latency at batch 1 and at ``batch_size`` -> static counts -> gates. Nothing is written
here; the report layer renders the returned result.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from onnxkd.data import (DataLike, Dataset, ImageOptions, InputSpec, as_dataset, input_specs,
                         random_inputs, reference_shapes)
from onnxkd.data.spec import shape_overrides
from onnxkd.data.labels import check_labels_fit, labelled_output
from onnxkd.errors import OnnxkdError
from onnxkd.model import ModelLike
from onnxkd.validate import detections, latency, quality, static
from onnxkd.validate.environment import environment
from onnxkd.validate.gates import Gates, evaluate
from onnxkd.validate.inference import batch_limit, run_dataset, run_once
from onnxkd.validate.latency import LatencyProtocol, Progress
from onnxkd.validate.loaded import LoadedModel, load_model, paired
from onnxkd.validate.result import ModelFigures, ValidationResult, json_safe
from onnxkd.validate.sessions import SessionConfig, create_session
from onnxkd.validate.shaped_outputs import QualityView, quality_view

def validate(teacher: ModelLike, student: ModelLike, data: DataLike = None, *, batch_size: int = 8,
             provider: str = "auto", threads: int = 0, graph_opt: str = "all",
             input_shapes: Mapping[str, Sequence[int]] | str | Iterable[str] | None = None,
             image_options: ImageOptions | None = None, warmup: int = 5, runs: int = 50, budget_s: float = 2.0,
             max_accuracy_drop: float | None = None, min_agreement: float | None = None,
             min_speedup: float | None = None, seed: int = 0, progress: Progress | None = None,
             transform: Callable | None = None, columns: Any = None) -> ValidationResult:
    """Compare ``student`` with ``teacher``: quality on ``data``, latency, static counts, gates.

    ``data`` is what ``onnxkd.data.as_dataset`` reads (a path, a ``Dataset``, a dict of arrays keyed by input
    name with optional ``labels``, a Python or Hugging Face data set, with ``transform``/``columns``); without
    it, latency runs on random inputs and quality is omitted.
    """
    if batch_size < 1 or runs < 1 or warmup < 0 or budget_s <= 0:
        raise OnnxkdError("batch size and runs must be >= 1, warm-up >= 0 and the time budget > 0")
    gates = Gates(max_accuracy_drop, min_agreement, min_speedup)
    t_file = load_model(teacher, "teacher")
    t_model, pairing_notes = paired(t_file, s_model := load_model(student, "student"))
    specs = _common_inputs(input_specs(t_model.proto), input_specs(s_model.proto))
    given = shape_overrides(input_shapes)
    dataset = as_dataset(data, specs, image_options, transform=transform, columns=columns)
    gates.check_measurable(dataset is not None, dataset is not None and dataset.labels is not None)
    # sizes for dynamic dims, refused now rather than after the sessions are built
    overrides = reference_shapes(specs, given, dataset.sample_shapes() if dataset is not None else None)

    config = SessionConfig(provider, threads, graph_opt)
    t_session, t_create_ms = create_session(t_model.source, config, "teacher")
    s_session, s_create_ms = create_session(s_model.source, config, "student")

    batch_one = batch_limit(specs, 1)
    batched = batch_limit(specs, batch_size)
    feeds_one = _feeds(dataset, specs, overrides, batch_one, seed)
    t_first_ms = latency.time_once(lambda: run_once(t_session, feeds_one, "teacher"))
    s_first_ms = latency.time_once(lambda: run_once(s_session, feeds_one, "student"))
    view = quality_view(t_model, s_model, t_session, s_session, config, expose=dataset is not None)
    _check_outputs(run_once(t_session, feeds_one, "teacher"), run_once(s_session, feeds_one, "student"),
                   [o.name for o in t_session.get_outputs()], view.shaped)

    result_quality, accuracy, agreement, warnings = [], None, None, []
    if dataset is not None:
        if progress:
            progress("quality", 0, 1)
        result_quality, accuracy, agreement, warnings = _quality(view, dataset, specs, batch_size, seed)
        if progress:
            progress("quality", 1, 1)
    warnings = pairing_notes + _unused_batches(given, specs, batch_size) + warnings

    protocol = LatencyProtocol(warmup=warmup, runs=runs, budget_s=budget_s)
    lat_one = _latency_pair(t_session, s_session, feeds_one, batch_one, protocol, progress)
    lat_batched = None
    if batched != batch_one:
        feeds_b = _feeds(dataset, specs, overrides, batched, seed)
        lat_batched = _latency_pair(t_session, s_session, feeds_b, batched, protocol, progress)

    # the shapes the model ran at, in its own layout (feeds hold samples on axis 0)
    measured = {s.name: s.with_batch(feeds_one[s.name].shape[1:], len(feeds_one[s.name])) for s in specs}
    t_fig = _figures(t_model, specs, measured, t_session, t_create_ms, t_first_ms, _own_names(t_file, t_model))
    s_fig = _figures(s_model, specs, measured, s_session, s_create_ms, s_first_ms)
    t_fig.latency_ms, s_fig.latency_ms = lat_one["teacher"], lat_one["student"]
    if lat_batched:
        t_fig.latency_ms_batched, s_fig.latency_ms_batched = lat_batched["teacher"], lat_batched["student"]
    if accuracy is not None:
        t_fig.accuracy, s_fig.accuracy = accuracy["teacher"], accuracy["student"]

    speedup = dict(lat_one["speedup"], batch_size=batch_one)
    # MACs left uncounted in either model (shapes inference could not reach) make the ratio meaningless: a teacher
    # counted as 0 MACs read "0.00x fewer MACs"
    comparable = not t_fig.macs_unknown_nodes and not s_fig.macs_unknown_nodes
    speedup["macs_reduction"] = _ratio(t_fig.macs, s_fig.macs) if comparable else None
    speedup["params_reduction"] = _ratio(t_fig.params, s_fig.params)
    speedup["batched"] = dict(lat_batched["speedup"], batch_size=batched) if lat_batched else None
    warnings += _speed_warnings(speedup, t_fig, s_fig)

    # without class scores: agreement per token, else a detector's mAP@0.5 against the teacher's detections
    per_token = next((q["top1_agreement"] for q in result_quality if q.get("per_token")), None)
    detected = next((q["detections"]["map50"] for q in result_quality if q.get("detections")), None)
    gate_results = evaluate(gates, accuracy["drop"] if accuracy else None,
                            agreement["top1"] if agreement else per_token if per_token is not None else detected,
                            speedup["p50"], _broken_values(result_quality))
    channels = static.compare_channels(static.channels_per_layer(t_model.proto), static.channels_per_layer(s_model.proto))
    run_config = {
        "session": config.to_dict(),
        "latency": protocol.to_dict(),
        "batch_size": batched,
        "seed": seed,
        "gates": gates.to_dict(),
    }
    data_info = None
    if dataset is not None:
        data_info = {"source": dataset.source, "n": len(dataset), "labels": dataset.labels is not None}
    return ValidationResult(
        teacher=t_fig, student=s_fig, speedup=speedup,
        environment=environment(config.to_dict(), t_session.get_providers()),
        config=run_config, agreement=agreement, accuracy=accuracy, quality=result_quality,
        channels=channels, gates=gate_results, warnings=warnings, data=data_info,
    )


def compare_quality(teacher: ModelLike, student: ModelLike, data: DataLike, *, batch_size: int = 32,
                    provider: str = "auto", threads: int = 0, seed: int = 0) -> dict:
    """Quality figures only (no timing): ``{"accuracy", "agreement", "quality"}`` as in ``validate``.

    ``compress`` uses it to measure the pruned student before distillation, on the same held-out data.
    """
    t_model, _ = paired(load_model(teacher, "teacher"), s_model := load_model(student, "student"))
    specs = _common_inputs(input_specs(t_model.proto), input_specs(s_model.proto))
    dataset = as_dataset(data, specs)
    config = SessionConfig(provider, threads, "all")
    t_session, _ = create_session(t_model.source, config, "teacher")
    s_session, _ = create_session(s_model.source, config, "student")
    view = quality_view(t_model, s_model, t_session, s_session, config)
    per_output, accuracy, agreement, _ = _quality(view, dataset, specs, batch_size, seed)
    return json_safe({"accuracy": accuracy, "agreement": agreement, "quality": per_output})


def _common_inputs(teacher: list[InputSpec], student: list[InputSpec]) -> list[InputSpec]:
    t_names, s_names = [s.name for s in teacher], [s.name for s in student]
    if sorted(t_names) != sorted(s_names):
        raise OnnxkdError(f"teacher inputs {t_names} and student inputs {s_names} differ; they must be fed the same data")
    if not teacher:
        raise OnnxkdError("teacher: the model has no inputs to feed")
    for t in teacher:
        s = next(x for x in student if x.name == t.name)
        if t.dtype != s.dtype or t.rank != s.rank:
            raise OnnxkdError(f"input {t.name!r}: teacher expects {t.describe()}, student {s.describe()}")
    return teacher


def _feeds(dataset: Dataset | None, specs, overrides, batch: int, seed: int) -> dict[str, np.ndarray]:
    if dataset is not None:
        return dataset.first(batch)
    return random_inputs(specs, overrides, batch=batch, seed=seed)


def _check_outputs(teacher: list[np.ndarray], student: list[np.ndarray], names: list[str],
                   shaped: Mapping[str, str]) -> None:
    if len(teacher) != len(student):
        raise OnnxkdError(f"teacher has {len(teacher)} outputs, student {len(student)}; they cannot be compared")
    for i, (name, t, s) in enumerate(zip(names, teacher, student)):
        if t.shape != s.shape and name not in shaped:
            raise OnnxkdError(f"output {i}: teacher shape {list(t.shape)}, student shape {list(s.shape)} differ")


def _quality(view: QualityView, dataset: Dataset, specs: list[InputSpec], batch_size: int, seed: int):
    t_out = run_dataset(view.teacher, dataset, specs, batch_size, "teacher")
    s_out = run_dataset(view.student, dataset, specs, batch_size, "student")
    labels, names, shaped = dataset.labels, view.names, view.shaped
    per_output = [quality.data_shaped_metrics(n, shaped[n], t, s) if n in shaped else
                  quality.class_id_metrics(n, t, s) if n in view.class_ids else
                  quality.token_score_metrics(n, t, s) if n in view.token_scores else
                  dict(quality.output_metrics(n, t, s), **({"read_by": view.exposed[n]} if n in view.exposed else {}),
                       **(_parts_metrics(t, s, view.parts[n]) if n in view.parts else {}))
                  for n, t, s in zip(names, t_out, s_out)]
    warnings = []
    for m in per_output:
        for who in ("teacher", "student"):
            bad = m[f"{who}_nonfinite"]
            if bad["nan"] or bad["inf"]:
                warnings.append(f"{who} output {m['name']!r} has {bad['nan']} NaN and {bad['inf']} Inf values")
    scores, ids = _classified_output(view, t_out, labels)
    if scores is None and ids is None:
        if labels is not None:
            warnings.append("labels given but no output looks like class scores [N, C] or class ids (ArgMax): "
                            "accuracy omitted")
        return per_output, None, None, warnings
    chosen = scores if scores is not None else ids
    t, s = (quality.predicted_classes(out[chosen], class_ids=scores is None) for out in (t_out, s_out))
    agreement = dict(quality.agreement(t, s, seed), output=names[chosen])
    accuracy = None
    if labels is not None:
        if scores is not None:
            check_labels_fit(labels, t_out[scores], names[scores])
        accuracy = dict(quality.accuracy_comparison(t, s, labels, seed), output=names[chosen])
    return per_output, accuracy, agreement, warnings


def _unused_batches(given, specs: list[InputSpec], batch_size: int) -> list[str]:
    """A batch size in --input-shape is not what validate runs at (batch 1, where MACs are counted, and
    --batch-size): said, rather than dropped without a word (inspect counts MACs at the batch given)."""
    notes = []
    for spec in specs:
        shape = (given or {}).get(spec.name)
        if shape is not None and len(shape) > spec.batch_axis and shape[spec.batch_axis] != 1 \
                and not isinstance(spec.shape[spec.batch_axis], int):
            notes.append(f"--input-shape {spec.name}: its batch ({shape[spec.batch_axis]}) is not used; validate runs "
                         f"at batch 1 (MACs are counted there) and at --batch-size ({batch_size})")
    return notes


def _broken_values(per_output: list[dict]) -> int:
    """The student's NaN and Inf values, in the outputs where the teacher has none (the finite-outputs gate)."""
    return sum(q["student_nonfinite"]["nan"] + q["student_nonfinite"]["inf"] for q in per_output
               if not q["teacher_nonfinite"]["nan"] and not q["teacher_nonfinite"]["inf"])


def _parts_metrics(teacher: np.ndarray, student: np.ndarray, parts) -> dict:
    """An output of boxes next to scores: each part's figures, and where it reads as YOLO detections, the
    student's detections scored against the teacher's."""
    found = {"parts": quality.parts_metrics(teacher, student, parts)}
    if detections.has_detections(parts, teacher.shape):
        found["detections"] = detections.agreement(teacher, student, parts)
    return found


def _classified_output(view: QualityView, t_out: list[np.ndarray], labels) -> tuple[int | None, int | None]:
    """(index of the class-score output the labels belong to, else None; index of an output of class ids, one
    per sample, as a deployment export's ArgMax gives, else None)."""
    names = view.names
    candidates = [i for i, t in enumerate(t_out) if quality.is_class_scores(t) and t.dtype.kind == "f"
                  and names[i] not in view.shaped and names[i] not in view.exposed]
    chosen = labelled_output([t_out[i] for i in candidates], labels)
    ids = next((i for i, name in enumerate(names) if name in view.class_ids and t_out[i].size == len(t_out[i])), None)
    return (None if chosen is None else candidates[chosen]), ids


def _latency_pair(t_session, s_session, feeds, batch: int, protocol: LatencyProtocol, progress) -> dict:
    t_ms, s_ms = latency.time_interleaved(
        lambda: t_session.run(None, feeds), lambda: s_session.run(None, feeds), protocol,
        stage=f"latency batch {batch}", progress=progress,
    )
    return {
        "teacher": latency.summarize(t_ms, batch),
        "student": latency.summarize(s_ms, batch),
        "speedup": latency.speedup(t_ms, s_ms),
    }


def _own_names(file: LoadedModel, renamed: LoadedModel) -> dict[str, str]:
    """The teacher's input and output names as its file gives them, for the names ``paired`` gave it (the
    student's, paired by position): the report describes each model as it is."""
    def interface(proto):
        weights = {init.name for init in proto.graph.initializer}
        return [i.name for i in proto.graph.input if i.name not in weights] + [o.name for o in proto.graph.output]

    return dict(zip(interface(renamed.proto), interface(file.proto)))


def _figures(model: LoadedModel, specs, measured, session, create_ms: float, first_ms: float,
             own_names: Mapping[str, str] | None = None) -> ModelFigures:
    """``own_names``: the model's own name for each name it runs under here (a teacher paired with a student)."""
    own = (own_names or {}).get
    macs = static.count_macs(model.proto, measured)
    return ModelFigures(
        path=model.path, sha256=model.sha256, size_bytes=model.size_bytes,
        params=static.count_params(model.proto), macs=macs["total"], macs_int8=macs["int8"], macs_by_op=macs["by_op"],
        macs_unknown_nodes=macs["unknown_nodes"], nodes=static.node_count(model.proto),
        op_histogram=static.op_histogram(model.proto),
        inputs=[{"name": own(s.name, s.name), "dtype": str(s.dtype), "shape": list(s.shape),
                 "measured_shape": list(measured[s.name])} for s in specs],
        outputs=[own(o.name, o.name) for o in session.get_outputs()],
        session_create_ms=create_ms, first_run_ms=first_ms,
    )


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _speed_warnings(speedup: dict, teacher: ModelFigures, student: ModelFigures) -> list[str]:
    warnings = []
    macs = f"MACs reduction {speedup['macs_reduction']:.2f}x" if speedup["macs_reduction"] else "MACs not counted"
    for speed in (speedup, speedup["batched"]):
        if speed is None:
            continue
        lo, hi = speed["ci95"]
        where = f"speed-up p50 at batch {speed['batch_size']} {speed['p50']:.2f}x (95% CI {lo:.2f}-{hi:.2f})"
        if speed["p50"] <= 1.0:
            warnings.append(f"student is not faster than teacher: {where} with {macs}")
        elif lo <= 1.0:
            warnings.append(f"{where} is not significant (the interval includes 1) with {macs}")
    for fig in (teacher, student):
        if fig.macs_unknown_nodes:
            warnings.append(f"MACs of {len(fig.macs_unknown_nodes)} node(s) of the {'teacher' if fig is teacher else 'student'} "
                            "are unknown (shapes not inferable) and not counted")
    return warnings
