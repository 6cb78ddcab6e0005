"""``quantize(model, data)``: static int8 QDQ that is never slower than the float model and within an
accuracy budget.

The story: refuse what cannot be quantized -> prepare the float model (opset 13, shapes, BatchNorm folded) ->
choose the activation type for the target -> split the data into calibration, evaluation and training samples
-> the search (search.py: speed, QAD, accuracy, a last timing) -> the result (the int8 model, or the float one
with a note).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedOpsetsPass

from onnxkd.data import DataLike, Dataset, ImageOptions, as_dataset, input_specs, random_inputs, reference_shapes
from onnxkd.errors import OnnxkdError
from onnxkd.model import ModelLike, load, save
from onnxkd.quantize import accuracy, speed
from onnxkd.quantize.calibration import DEFAULT_METHOD, split
from onnxkd.quantize.channel_pad import padded_convolutions
from onnxkd.quantize.prepare import LARGE_BYTES, check_quantizable, model_bytes, prepare_float
from onnxkd.quantize.ptq import SCOPES, Quantizer, Settings, compute_nodes, quantized_nodes
from onnxkd.quantize.result import QuantizeResult
from onnxkd.quantize.search import Search
from onnxkd.quantize.target import choose_target
from onnxkd.validate.label_check import check_label_classes
from onnxkd.validate.gates import within
from onnxkd.validate.inference import batch_limit
from onnxkd.validate.latency import LatencyProtocol
from onnxkd.validate.sessions import SessionConfig, resolve_providers

Log = Callable[[str], None]


def quantize(model: ModelLike, data: DataLike = None, *, activation_type: str = "auto",
             calibration: str = DEFAULT_METHOD, per_channel: bool = True, calibration_samples: int = 128,
             eval_samples: int = 500, max_accuracy_drop: float = 0.01, min_int8_speedup: float | None = None,
             batch_size: int = 8, provider: str = "auto", threads: int = 0, seed: int = 0, scope: str = "auto",
             random_data: bool = False, image_options: ImageOptions | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None, transform: Callable | None = None,
             columns: Any = None, protocol: LatencyProtocol | None = None,
             speedups_of: Callable[..., speed.SpeedupsOf] | None = None,
             times_of: speed.TimesOf | None = None, log: Log | None = None,
             refine: Callable[[ir.Model, Dataset], ir.Model] | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> QuantizeResult:
    """Quantize ``model`` to int8 (QDQ, per-channel weights) where that is measured faster, calibrated on
    ``data`` (anything ``onnxkd.data.as_dataset`` reads; ``random_data=True`` calibrates on random inputs).

    ``scope``: what is quantized (ptq.SCOPES): "all" ops onnxruntime can quantize, only the "weighted" ones
    (Conv, Gemm, MatMul), or "auto": all, else weighted where all does not pay or loses more than the budget.
    ``max_accuracy_drop``: absolute top-1 accuracy with labels, else 1 - agreement with the float model (class
    scores) or the relative output error. ``min_int8_speedup``: the gate; the result says whether it passed.
    ``speedups_of(float_path, feeds, config, protocol)`` and ``times_of``: timing hooks (tests inject clocks).
    ``progress(stage, done, total)``: the timing runs, as validate reports them (``report.progress.StageBars``).
    ``refine(int8_model, training_samples) -> int8_model``: quantization-aware training of the model that passed
    the speed rule (``onnxkd.qat`` distils it from the float teacher); its result is kept when it is within the
    accuracy budget, else the accuracy control runs on the PTQ model as without it.
    """
    log = log or (lambda message: None)
    if scope != "auto" and scope not in SCOPES:
        raise OnnxkdError(f"scope {scope!r}: choose from auto, {', '.join(SCOPES)}")
    original = load(model)
    check_quantizable(original)
    specs = input_specs(ir.to_proto(original))
    if data is None and not random_data:
        raise OnnxkdError("quantize needs calibration data (--data), or --random-data to calibrate on random inputs")
    dataset = as_dataset(data, specs, image_options, transform=transform, columns=columns)
    if dataset is not None:
        check_label_classes(model, specs, [dataset])  # now, not after calibration and timing (a path: no copy)
    notes = []
    if dataset is None:
        shapes = reference_shapes(specs, dict(input_shapes or {}), None)
        dataset = _random_dataset(specs, shapes, calibration_samples + eval_samples, seed)
        notes.append("calibrated on random inputs (--random-data): ranges and accuracy figures mean little")
    calib, evaluation, training, overlap = split(dataset, calibration_samples, eval_samples, seed)
    if overlap:
        notes.append(f"only {len(dataset)} samples: accuracy was measured on the calibration samples")

    config = SessionConfig(provider, threads, "all")
    target = choose_target(resolve_providers(provider), activation_type)
    settings = Settings(target, calibration, per_channel)
    log(f"target {target.device}: {target.activation} activations, int8 weights ({target.reason})")
    batch = batch_limit(specs, batch_size)
    with tempfile.TemporaryDirectory(prefix="onnxkd-quantize-") as work:
        folder = Path(work)
        float_path, prepared = prepare_float(original, folder)
        float_graph = onnx.load(str(float_path), load_external_data=False).graph  # read once, used by all below
        quantizer = Quantizer(float_path, float_graph, folder, calib, settings, batch,
                              large=model_bytes(original) > LARGE_BYTES)
        quantizer.keep_decoding_float()
        computes = compute_nodes(float_graph)
        log(f"calibrating on {len(calib)} samples ({calibration})")
        feeds = {b: evaluation.first(b) for b in sorted({batch_limit(specs, 1), batch})}
        ranking_samples = calib.take(slice(0, min(len(calib), 32)))

        def ranking(path: Path) -> dict[str, float]:
            log("ranking nodes by quantization sensitivity")
            return accuracy.sensitivity(float_path, float_graph, path, ranking_samples, batch, folder)

        def refine_logged(int8_model: ir.Model, samples: Dataset) -> ir.Model:
            log("PTQ loses more than the budget: quantization-aware distillation")
            return refine(int8_model, samples)

        search = Search(
            quantize=quantizer,
            timer=(speedups_of or partial(speed.onnxruntime_speedups, progress=progress))(
                float_path, feeds, config, protocol or LatencyProtocol()),
            profiler=times_of or speed.onnxruntime_times(feeds[batch], config),
            evaluate=lambda: accuracy.evaluator(float_path, evaluation, specs, batch, config),
            ranking=ranking, float_path=float_path,
            nodes={node.name for node in float_graph.node}, computes=set(computes),
            partners=lambda: accuracy.feeders(float_graph), max_drop=max_accuracy_drop,
            load=_load_in_memory, save=lambda m: save(m, folder / "qat.onnx"),
            padding=quantizer if target.device == "cpu-x86" else None,  # the x86 kernel's channel multiple
            use_scope=quantizer.use_scope, scopes=SCOPES if scope == "auto" else (scope,))
        outcome = search.run(refine_logged if refine is not None else None, training)
        final, speedups = outcome.path, outcome.speedups
        notes += quantizer.notes + outcome.notes
        quantized = len(quantized_nodes(final)) if final is not None else 0
        result_model = _delivered(_load_in_memory(final), original) if final is not None else original
        padded = padded_convolutions(result_model.graph) if final is not None else []
    over_budget = outcome.quality is not None and not within(outcome.quality["drop"], max_accuracy_drop)
    float_reason = None if final is not None else ("accuracy" if over_budget else "speed")
    gate = None
    if min_int8_speedup is not None:
        best = min(speedups.values()) if final is not None else 1.0
        gate = {"min": min_int8_speedup, "speedup": best, "passed": final is not None and best >= min_int8_speedup}
    return QuantizeResult(
        qat=outcome.qat, model=result_model, int8=final is not None, target=target.to_dict(),
        calibration=dict(settings.to_dict(), method=quantizer.method, samples=len(calib),
                         evaluation_samples=len(evaluation)),
        prepared=prepared, quantized_nodes=quantized, compute_nodes=len(computes), padded_inputs=padded,
        scope=outcome.scope if final is not None else None, float_reason=float_reason,
        float_nodes=outcome.float_nodes if final is not None else {},
        speedups={str(b): s for b, s in speedups.items()}, quality=outcome.quality, max_accuracy_drop=max_accuracy_drop,
        size_bytes={"float": model_bytes(original), "int8": model_bytes(result_model)},
        trials=outcome.trials, notes=notes, gate=gate)


def _load_in_memory(path: Path) -> ir.Model:
    return ir.from_proto(onnx.load(str(path)))  # weights read now: the work folder goes away


def _delivered(model: ir.Model, original: ir.Model) -> ir.Model:
    """The int8 model as it is written: it must drop in where the float one ran.

    - The original's input and output dims: onnxruntime's symbolic shape inference renames dynamic dims it proves
      equal (``unk__13`` became ``p2o.DynamicDimension.0``).
    - Only the opsets its nodes use: onnxruntime's pre-processing declares every domain it knows
      (``ai.onnx.training``, ``com.microsoft.nchwc``, ``org.pytorch.aten``, ...), which other runtimes may refuse."""
    declared = {v.name: v for v in [*original.graph.inputs, *original.graph.outputs]}
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.name in declared:
            value.shape = declared[value.name].shape
    RemoveUnusedOpsetsPass()(model)
    return model


def _random_dataset(specs, shapes, count: int, seed: int) -> Dataset:
    return Dataset(random_inputs(specs, shapes, batch=count, seed=seed), None, "random")
