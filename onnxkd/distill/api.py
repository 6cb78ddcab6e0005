"""``distill(teacher, student, data)``: train the pruned student to match its teacher, write it back to ONNX.

The story: load both graphs and check the student comes from the teacher -> fit the data (hold out
validation samples) -> bridge both to torch -> one probe batch decides the targets and hints -> cache
the teacher's outputs when they fit -> recalibrate BatchNorm -> train (``trainer.train``) -> write the
best epoch's weights into the student graph, atomically.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx_ir as ir
import torch

from onnxkd import model as model_io
from onnxkd.data import (SAME_DATA_WARNING, DataLike, Dataset, ImageOptions, align_classes, as_dataset,
                         check_input_shapes, data_identity, input_specs, random_inputs, same_data)
from onnxkd.data.decoded import cache_decoded_images, drop_decoded_images
from onnxkd.data.labels import labelled_output
from onnxkd.distill import batchnorm, checkpoint, distributed, hints as hint_rules
from onnxkd.distill.allocator import keep_freed_memory
from onnxkd.distill.data_fit import first_run_on_data
from onnxkd.distill.augment import Augmenter, policy as augment_policy
from onnxkd.distill.batch_first import batch_axes, batch_first
from onnxkd.distill.batches import Batches, split_holdout
from onnxkd.distill.loader import Loader, default_workers, in_order
from onnxkd.distill.teacher_cache import cache_teacher, remove_disk_cache
from onnxkd.distill.config import DistillConfig
from onnxkd.distill.evaluate import describe, evaluate, score
from onnxkd.distill.objective import Objective
from onnxkd.graph_passes.analyze.pairing import paired_teacher
from onnxkd.distill.progress import reporter
from onnxkd.distill.result import DistillResult
from onnxkd.distill.targets import data_shaped_note, decoded_note, plan_targets, probed_tensors
from onnxkd.distill.teacher import Teacher
from onnxkd.distill.trainer import Session, TrainState, keep_as_best, named_outputs, restore, train
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.api import read_plan_details
from onnxkd.model import ModelLike
from onnxkd.torch_bridge import to_torch, write_back

NO_EPOCH_BETTER = ("no epoch did better on the validation data than the student before training, so its weights "
                   "are kept as they were; more data, more epochs or a lower --lr may help")
DATA_FREE_WARNING = ("no --data: distilling on random inputs drawn from the input shapes (data-free, BatchNorm "
                     "statistics frozen). The student will be weak; give real samples with --data")


def _restores_torch_state(function):
    """``distill`` may lower torch's thread count while loader workers share the CPUs, and seeds torch's global
    generators (dropout draws from them): callers get their thread count and their random streams back."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


@_restores_torch_state
def distill(teacher: ModelLike, student: ModelLike, data: DataLike = None, output: str | os.PathLike | None = None, *,
            val_data: DataLike = None, work_dir: str | os.PathLike | None = None, resume: bool = False,
            image_options: ImageOptions | None = None, input_shapes: dict | None = None, progress: Any = None,
            transform: Callable | None = None, columns: Any = None, config: DistillConfig | None = None,
            **options: Any) -> DistillResult:
    """Distil ``teacher`` into ``student`` (usually ``onnxkd.prune``'s output) on ``data``.

    ``data``/``val_data``: a path (.npz/.npy, a folder of .npy files, an image folder or list, a Hugging Face
    save_to_disk folder or .parquet file), a ``Dataset``, a dict of arrays by input name (+ optional ``labels``),
    a torch ``Dataset``/``IterableDataset``/``DataLoader``, any iterable of samples or a ``datasets.Dataset``
    (see ``onnxkd.data.as_dataset``; ``transform`` maps each item of a Python source to a sample, ``columns``
    maps a Hugging Face data set's columns to inputs); without ``val_data`` a seeded 10% of ``data`` is held
    out; without ``data`` random inputs are used (data-free, weak). ``options`` are the fields of ``DistillConfig`` (epochs,
    steps, lr, batch_size, optimizer, temperature, alpha, loss, hints, device, bf16, compile, seed, ...),
    or pass a whole ``config``. ``output``: where the distilled student is written (atomically);
    checkpoints go to ``work_dir`` (default ``<output>.work``) after every epoch, and ``resume=True``
    continues from there. ``progress``: a rich Console, a callable receiving event dicts, or None.
    """
    started = time.perf_counter()
    keep_freed_memory()  # steps reuse their buffers instead of page-faulting fresh ones (allocator.py)
    config = _config(config, options)
    if data is None:  # random inputs must not become BatchNorm statistics
        config = replace(config, recalibrate_bn=False, freeze_bn=True)
    world = distributed.init(config.device)
    report = reporter(progress, world.main)
    output, work_dir = _paths(teacher, student, output, work_dir, {"data": data, "validation data": val_data})
    warnings: list[str] = []

    # ----------------------------------------------------------------- models and data
    teacher_model, student_model = load_labelled(teacher, "teacher"), load_labelled(student, "student")
    teacher_model, pairing_notes = paired_teacher(teacher_model, student_model)
    for note in pairing_notes:  # outputs paired by position: the user should know, in case the order differs
        warnings.append(note)
        report.line(f"Warning: {note}", "bold yellow")
    specs = input_specs(ir.to_proto(student_model))
    input_shapes = check_input_shapes(input_shapes, specs)
    read = dict(image_options=image_options, transform=transform, columns=columns)
    train_set, val_set, data_info = _datasets(data, val_data, specs, config, read, input_shapes, report, warnings)
    device = resolve_device(config.device, world)
    torch.manual_seed(config.seed)

    teacher_module = to_torch(teacher_model, half_as_float32=True, frozen=True).to(device).eval()
    student_module = to_torch(student_model, half_as_float32=True).to(device)
    input_names = student_module.input_names
    autocast = _autocast(device, config.bf16)

    def run_module(module, inputs, capture):  # module: the teacher or student, maybe wrapped by DDP or compile
        with autocast():
            return module(*student_module.samples_entering(inputs), capture=capture)

    # ----------------------------------------------------------------- what is distilled, and the teacher's side
    hints = hint_rules.resolve(config.hints, teacher_model, student_model, read_plan_details(student_model))
    probe = next(in_order(train_set, input_names, min(config.batch_size, len(train_set)), device))
    axes = first_run_on_data(
        teacher_module, teacher_model, probe.inputs, "the teacher",
        lambda: batch_axes(teacher_module, probe.inputs, probed_tensors(student_model) + [h.tensor for h in hints],
                           run_module))
    hints = [h.samples_first(axes[h.tensor]) if h.tensor in axes else h for h in hints]
    run = batch_first(run_module, student_module.output_names, axes)
    objective, teacher_values = _objective(teacher_module, student_module, student_model, probe, hints, config, run)
    _check_labels(objective, teacher_values, train_set, val_set)
    for note in (data_shaped_note(student_model), decoded_note(objective.targets, student_model)):
        if note:
            report.line(note)
    needed = [t.tensor for t in objective.targets]
    train_teacher = Teacher(teacher_module, needed, hints, run)
    val_teacher = Teacher(teacher_module, needed, [], run)
    workers = config.workers if config.workers is not None else default_workers(train_set)
    # validation's workers live for one pass: kept between epochs, they would double the processes holding memory
    train_loader = Loader(train_set, input_names, device, workers)
    val_loader = Loader(val_set, input_names, device, workers, persistent=False)
    decoded = _cache_decoded_images([train_set, val_set], work_dir, world.rank, report)
    if workers:  # decoding workers compete with training for the cores; on CPU, none run once all is decoded
        if not decoded:
            how = _share_cpus(device, workers)
        else:
            how = "; on CPU, in the training process once every image is decoded" if device.type == "cpu" else ""
        report.line(f"reading data in {workers} worker process(es) (--workers){how}")
    try:  # the caches in the work folder go when the run ends, however it ends (a resumed run fills them again)
        augmenter = _augmenter(config, specs, image_options, report, warnings)
        batches = Batches(train_loader, config.batch_size, config.seed, world.rank, world.size)
        epochs, total_steps = config.schedule(len(batches))
        cache = cache_teacher(train_teacher, val_teacher, train_loader, val_loader, probe, config, report,
                              augmenting=augmenter is not None, epochs=epochs, work_dir=work_dir, rank=world.rank)
        if cache["where"] == "none" and augmenter is None:
            warnings.append(cache["reason"])

        # ----------------------------------------------------------------- the training session
        trained = distributed.wrap(student_module, world, device)
        if config.compile:
            trained = torch.compile(trained, backend=config.compile_backend)
        optimizer = _optimizer(student_module, config)
        fingerprint = _fingerprint(teacher, student, train_set, val_set, config, world, epochs, total_steps)
        session = Session(
            student=student_module, forward=lambda inputs, capture: run(trained, inputs, capture),
            teacher=train_teacher, val_teacher=val_teacher, objective=objective, batches=batches,
            val_batches=lambda: val_loader.in_order(config.batch_size, world.rank, world.size),
            optimizer=optimizer, config=config, epochs=epochs, total_steps=total_steps, world=world, device=device,
            report=report, work_dir=work_dir, fingerprint=fingerprint, autocast=autocast, augment=augmenter,
        )

        # ----------------------------------------------------------------- BatchNorm, then training
        if resume:
            saved = checkpoint.load(work_dir, fingerprint) if work_dir else _no_work_dir()
            state = restore(session, saved)
            recalibration = saved.get("recalibration")
            report.line(f"resuming at epoch {state.epoch + 1}, step {state.step} (from {checkpoint.path_in(work_dir)})")
        else:
            state = TrainState()
            recalibration = _recalibrate(session, student_model, run)
            state.initial = _starting_figures(recalibration) if recalibration else _validate(session)
            keep_as_best(session, state, 0, state.initial)
        session.recalibration = recalibration
        report.line(f"distilling: {len(train_set):,} training samples, {len(val_set):,} validation, "
                    f"{epochs} epoch(s) = {total_steps:,} steps of {batches.batch_size}, "
                    f"lr {config.peak_lr:g} ({config.optimizer}), T {config.temperature:g}, on {device}"
                    + (f" x {world.size} processes" if world.distributed else ""))
        state = train(session, state)
        if state.best is not None and state.best["epoch"] == 0 and state.history:
            warnings.append(NO_EPOCH_BETTER)
            report.line(f"Warning: {warnings[-1]}", "bold yellow")
    finally:
        remove_disk_cache(work_dir, world.rank)
        if decoded is not None:
            drop_decoded_images([train_set, val_set], decoded)
        if work_dir is not None:  # a work folder made only for the caches goes too (a failed run leaves none)
            with contextlib.suppress(OSError):
                Path(work_dir).rmdir()

    # ----------------------------------------------------------------- the student, written back
    distilled = write_back(student_module, student_model)
    if output is not None and world.main:
        model_io.save(distilled, output, external_data=True if model_io.has_external_data(student) else None)
    distributed.barrier(world)
    if work_dir is not None and world.main:
        checkpoint.remove(work_dir)
    best = state.best
    trained_seconds = sum(r["seconds"] for r in state.history)
    return DistillResult(
        model=distilled, output=None if output is None else str(output), config=config.to_dict(), device=str(device),
        world_size=world.size, data=data_info, targets=[t.to_dict() for t in objective.targets],
        hints=[h.to_dict() for h in hints], teacher_cache=cache,
        recalibration=recalibration, initial=state.initial, history=state.history, best_epoch=best["epoch"] if best else None,
        best=best["val"] if best else None, epochs=epochs, steps=state.global_step,
        wall_s=time.perf_counter() - started,
        samples_per_s=sum(r["samples_per_s"] * r["seconds"] for r in state.history) / max(trained_seconds, 1e-9),
        resumed=resume, warnings=warnings,
    )


# --------------------------------------------------------------------------- set-up helpers


def _config(config: DistillConfig | None, options: dict) -> DistillConfig:
    if config is not None and options:
        config = replace(config, **options)
    elif config is None:
        try:
            config = DistillConfig(**options)
        except TypeError as exc:
            raise OnnxkdError(f"distill: {exc}") from None
    config.check()
    return config


def _paths(teacher, student, output, work_dir, data: dict) -> tuple[Path | None, Path | None]:
    """The output path (checked before any training: same as an input, missing folder) and the work dir."""
    if output is None:
        return None, Path(work_dir) if work_dir is not None else None
    output = model_io.check_output_path(output, {"teacher model": teacher, "student model": student}, data=data)
    return output, Path(work_dir) if work_dir is not None else output.with_name(output.name + ".work")


def load_labelled(model: ModelLike, label: str) -> ir.Model:
    """The model, or one error line that says which of the two it was (``label``: teacher or student)."""
    try:
        return model_io.load(model)
    except OnnxkdError as exc:
        raise OnnxkdError(f"{label}: {exc}") from None


def _datasets(data, val_data, specs, config: DistillConfig, read: dict, input_shapes, report,
              warnings) -> tuple[Dataset, Dataset, dict]:
    """(train, validation, what they are); ``read``: as_dataset's options (image_options, transform, columns)."""
    if data is None:
        warnings.append(DATA_FREE_WARNING)
        report.line(f"Warning: {DATA_FREE_WARNING}", "bold yellow")
        train = _random_dataset(specs, config.data_free_samples, input_shapes, config.seed)
        val = as_dataset(val_data, specs, **read) if val_data is not None else \
            _random_dataset(specs, max(64, config.data_free_samples // 10), input_shapes, config.seed + 1)
        return train, val, _data_info(train, val, held_out=False, data_free=True)
    train = as_dataset(data, specs, **read)
    if val_data is not None:
        val = align_classes(train, as_dataset(val_data, specs, **read))
        if same_data(data, val_data):
            warnings.append(SAME_DATA_WARNING)
            report.line(f"Warning: {SAME_DATA_WARNING}", "bold yellow")
        return train, val, _data_info(train, val, held_out=False, data_free=False)
    train, val = split_holdout(train, config.val_fraction, config.seed)
    report.line(f"no --val-data: holding out {len(val):,} of {len(train) + len(val):,} samples "
                f"({config.val_fraction:.0%}, seed {config.seed}) for validation")
    return train, val, _data_info(train, val, held_out=True, data_free=False)


def _random_dataset(specs, n: int, input_shapes, seed: int) -> Dataset:
    arrays = random_inputs(specs, input_shapes, batch=n, seed=seed)
    return Dataset(arrays, None, "random inputs")


def _data_info(train: Dataset, val: Dataset, held_out: bool, data_free: bool) -> dict:
    return {"train": {"source": train.source, "n": len(train), "labels": train.labels is not None},
            "val": {"source": val.source, "n": len(val), "labels": val.labels is not None, "held_out": held_out},
            "data_free": data_free}


def resolve_device(choice: str, world: distributed.World = distributed.World()) -> torch.device:
    """``--device`` as a torch device, or one error line (CUDA absent, a name torch does not know)."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OnnxkdError(f"--device {choice}: CUDA is not available (torch {torch.__version__}); use --device cpu")
        if world.distributed:
            distributed.check_gpu_count(world.local_rank)
            return torch.device("cuda", world.local_rank)
    try:
        return torch.device(choice)
    except RuntimeError:
        raise OnnxkdError(f"--device {choice!r}: expected auto, cpu, cuda or cuda:N") from None


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _objective(teacher_module, student_module, student_model, probe, hints: list, config: DistillConfig,
               run) -> tuple[Objective, dict]:
    """One probe batch through both models decides the targets (class scores or maps, Softmax logits) and
    fixes each hint's kept channels. Returns the objective and the teacher's raw probe values."""
    probe_teacher = Teacher(teacher_module, probed_tensors(student_model), hints, run)
    teacher_values = probe_teacher.forward(probe.inputs, raw=True)
    targets = plan_targets(student_model, teacher_values, config.loss, config.output_weights)
    scored = [t for t in targets if t.class_scores]
    chosen = labelled_output([teacher_values[t.tensor].float().cpu().numpy() for t in scored],
                             None if probe.labels is None else probe.labels.cpu().numpy())
    objective = Objective(targets, [h.tensor for h in hints], config.temperature, config.alpha, config.hint_weight,
                          scored[chosen].output if chosen is not None else None)
    student_module.eval()
    with torch.no_grad():
        student_values = named_outputs(student_module, run(student_module, probe.inputs, objective.capture))
    for hint in hints:
        hint_rules.check_covered(hint, teacher_values[hint.tensor], student_values[hint.tensor])
        hint_rules.check_finite(hint, teacher_values[hint.tensor])
        hint.fit(teacher_values[hint.tensor], student_values[hint.tensor])
    return objective, teacher_values


def _cache_decoded_images(datasets, work_dir: Path | None, rank: int, report) -> Path | None:
    """Decode each image once per run (see data/decoded.py): the folder of the decoded cache, or None."""
    if work_dir is None:
        return None
    folder = Path(work_dir) / f"decoded-images-{rank}"
    size = cache_decoded_images(datasets, folder)
    if not size:
        return None
    report.line(f"decoding each image once: up to {size / 2**20:,.3g} MB of decoded pixels in {folder}")
    return folder


def _share_cpus(device: torch.device, workers: int) -> str:
    """On CPU, training threads and decoding workers share the cores: torch's threads are lowered to the cores the
    workers leave (2 threads + 2 decoding workers on 2 cores ran at 0.65x of 1 thread + 2 workers in the data
    benchmark). Not when images are decoded once per run: the workers then decode each image once (mostly in the
    teacher-output pass), and on CPU the training process reads every batch after that (loader.py)."""
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    if device.type != "cpu" or threads <= max(1, cores - workers):
        return ""
    torch.set_num_threads(max(1, cores - workers))
    return f"; training on {torch.get_num_threads()} of {cores} CPU threads, the rest decode"


def _augmenter(config: DistillConfig, specs, image_options: ImageOptions | None, report,
               warnings: list[str]) -> Augmenter | Callable | None:
    """The training batches' augmentation (None: none). Built-in policies transform the rank-4 float inputs (images);
    a model without them is not augmented, with a warning."""
    if callable(config.augment):
        report.line(f"augmenting training batches with {config.to_dict()['augment'][len('callable '):]} (the teacher "
                    "sees the same augmented batch)")
        return config.augment
    chosen = augment_policy(config.augment)
    if not (chosen.crop or chosen.flip or chosen.mix):
        return None
    images = [i for i, spec in enumerate(specs) if spec.rank == 4 and spec.dtype.kind == "f"]
    if not images:
        warnings.append(f"--augment {config.augment}: the model has no image inputs (rank-4 float); not augmenting")
        report.line(f"Warning: {warnings[-1]}", "bold yellow")
        return None
    layout = image_options.layout if image_options is not None else _layout(specs[images[0]])
    report.line(f"augmenting training batches ({chosen.describe()}; the teacher sees the same augmented batch, "
                "validation is not augmented)")
    return Augmenter(chosen, images, layout)


def _layout(spec) -> str:
    """nhwc when the last dim is a fixed 1 or 3 channels and dim 1 is not; nchw otherwise (most exporters)."""
    channels = (1, 3, 4)
    return "nhwc" if spec.shape[3] in channels and spec.shape[1] not in channels else "nchw"


def _check_labels(objective: Objective, teacher_values, *datasets: Dataset) -> None:
    scored = objective.labelled_target
    for dataset in datasets:
        if dataset.labels is None or not len(dataset.labels):
            continue
        if scored is None:
            raise OnnxkdError(f"{dataset.source}: labels given, but no output is class scores [N, C] to train "
                              "them on; drop the labels")
        classes = teacher_values[scored.tensor].shape[1]
        if int(dataset.labels.max()) >= classes:
            raise OnnxkdError(f"{dataset.source}: labels: class id {int(dataset.labels.max())} >= the {classes} "
                              f"scores of output {scored.output!r}")


def _optimizer(student, config: DistillConfig) -> torch.optim.Optimizer:
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise OnnxkdError("the student has no trainable float initializers")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.peak_lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)


def _fingerprint(teacher, student, train: Dataset, val: Dataset, config: DistillConfig, world, epochs: int,
                 steps: int) -> dict:
    """What must be equal for a checkpoint to continue this run."""
    trajectory = {k: v for k, v in config.to_dict().items()
                  if k not in ("device", "cache_mb", "compile", "compile_backend", "workers")}
    return {"teacher": model_io.sha256_of(teacher), "student": model_io.sha256_of(student),
            "train_samples": len(train), "val_samples": len(val), "train_data": data_identity(train),
            "val_data": data_identity(val), "processes": world.size,
            "epochs": epochs, "steps": steps, "options": trajectory}


def _no_work_dir():
    raise OnnxkdError("--resume needs a work directory (give an output path or work_dir)")


def _recalibrate(session: Session, student_model: ir.Model, run) -> dict | None:
    """BN statistics from training data, with the validation figures before and after."""
    nodes = batchnorm.batchnorm_nodes(student_model)
    if not session.config.recalibrate_bn or not nodes:
        return None
    before = _validate(session)
    saved = {name: session.student.onnx_tensor(name).detach().clone() for n in nodes for name in (n.mean, n.var)}
    n, size = len(session.batches.dataset), session.config.batch_size
    chosen = np.random.default_rng([session.config.seed, 20_000]).permutation(n)[:min(n, session.config.bn_samples)]
    share = np.array_split(chosen, session.world.size)[session.world.rank]
    session.report.start("BatchNorm recalibration", None)
    samples = batchnorm.recalibrate(
        session.student, student_model,
        session.batches.loader(share[start:start + size] for start in range(0, len(share), size)), session.world, run)
    session.report.stop()
    after = _validate(session)
    # Statistics of data unlike the teacher's (another preprocessing, a teacher never trained on it) can score
    # far below the pruned student as cut: the student then starts from the one that validates better.
    kept = score(after) >= score(before)
    if not kept:
        with torch.no_grad():
            for name, value in saved.items():
                session.student.onnx_tensor(name).copy_(value)
    session.report.line(f"BatchNorm recalibrated on {samples:,} samples ({len(nodes)} layers): "
                        f"before {describe(before)}; after {describe(after)}"
                        + ("" if kept else ": worse, the pruned statistics kept"))
    return {"samples": samples, "layers": len(nodes), "before": before, "after": after, "kept": kept}


def _starting_figures(recalibration: dict) -> dict:
    """The validation figures of the student training starts from: recalibrated, unless that scored worse."""
    return recalibration["after"] if recalibration.get("kept", True) else recalibration["before"]


def _validate(session: Session) -> dict:
    session.student.eval()
    return evaluate(lambda b: named_outputs(session.student, session.forward(b.inputs, session.objective.capture)),
                    session.val_teacher, session.objective.for_validation(), session.val_batches(), session.world,
                    session.device)


def default_epochs(n_train: int, batch_size: int) -> int:
    """The epochs a run without --epochs/--steps makes on ``n_train`` samples (documented in the README)."""
    return DistillConfig(batch_size=batch_size).schedule(max(1, math.ceil(n_train / batch_size)))[0]
