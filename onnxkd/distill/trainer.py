"""The training loop. Read ``train`` top to bottom: it is the whole story; the rest are its helpers.

Everything the loop needs (models, data, optimiser, objective) is prepared by ``api.distill`` into a
``Session``; the loop's own position lives in a ``TrainState``, which is what a checkpoint saves, so a
run interrupted at any step resumes exactly where it stopped.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch

from onnxkd.distill import checkpoint, distributed, interrupts
from onnxkd.distill.augment import Mixed
from onnxkd.distill.batches import Batch, Batches
from onnxkd.distill.config import DistillConfig
from onnxkd.distill.evaluate import describe, evaluate, score
from onnxkd.distill.objective import Objective
from onnxkd.distill.progress import Reporter
from onnxkd.distill.schedule import warmup_cosine
from onnxkd.distill.teacher import Teacher
from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import OnnxModule

CHECK_EVERY = 20  # steps between loss read-backs (a GPU sync): finiteness check and progress bar


class Diverged(OnnxkdError):
    """The loss became NaN/Inf: the options (learning rate) do not suit this model."""


@dataclass
class Session:
    student: OnnxModule  # the bridged student: its parameters are the ONNX initializers
    forward: Callable[[list[torch.Tensor], list[str]], tuple]  # the student under DDP/compile/autocast
    teacher: Teacher  # training targets (cached or computed per batch)
    val_teacher: Teacher
    objective: Objective
    batches: Batches
    val_batches: Callable[[], Iterable[Batch]]
    optimizer: torch.optim.Optimizer
    config: DistillConfig
    epochs: int
    total_steps: int
    world: distributed.World
    device: torch.device
    report: Reporter
    work_dir: Path | None
    fingerprint: dict
    autocast: Callable[[], ContextManager] = field(default=lambda: torch.autocast("cpu", enabled=False))
    recalibration: dict | None = None  # BN recalibration figures, kept in checkpoints for a resumed run's report
    # training-batch augmentation, (inputs, generator) -> inputs or (inputs, Mixed); None: none
    augment: Callable[[list[torch.Tensor], torch.Generator], Any] | None = None


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # steps done within it
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # {"epoch", "score", "val", "state"}
    initial: dict | None = None  # validation figures before the first step
    loss_sum: float = 0.0  # this epoch so far, over samples
    samples: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0  # of ``seconds``, spent waiting for the next batch

    def to_checkpoint(self) -> dict:
        return {k: getattr(self, k) for k in ("epoch", "step", "global_step", "history", "best", "initial",
                                              "loss_sum", "samples", "seconds", "data_seconds")}


def train(s: Session, state: TrainState) -> TrainState:
    """Run from ``state`` to the last step; the best epoch's weights are in ``s.student`` afterwards."""
    warmup = round(s.config.warmup * s.total_steps)
    try:
        with interrupts.deferred():
            while state.epoch < s.epochs and state.global_step < s.total_steps:
                run_epoch(s, state, warmup)
                end_epoch(s, state)
            interrupts.check()
    except KeyboardInterrupt:
        save_checkpoint(s, state)  # resumable at the exact step it stopped at
        if s.work_dir is not None:
            s.report.line(f"Interrupted at epoch {state.epoch + 1}, step {state.step}: checkpoint saved in "
                          f"{s.work_dir}; continue with --resume", "yellow")
        raise
    if state.best is not None:
        s.student.load_state_dict(state.best["state"])
    return state


def run_epoch(s: Session, state: TrainState, warmup: int) -> None:
    training_mode(s)
    batch_size = s.batches.batch_size
    s.report.start(f"epoch {state.epoch + 1}/{s.epochs}", len(s.batches) * batch_size)
    running = torch.zeros((), dtype=torch.float64, device=s.device)
    started, steps_here = time.perf_counter(), 0
    try:
        for batch in waited_for(s.batches.epoch(state.epoch, state.step), state):
            interrupts.check()  # Ctrl-C lands here, between two whole steps
            if state.global_step >= s.total_steps:
                break
            lr = s.config.peak_lr * warmup_cosine(state.global_step, s.total_steps, warmup)
            for group in s.optimizer.param_groups:
                group["lr"] = lr

            batch, mixed = augmented(s, state, batch)  # the teacher and the student see the same augmented batch
            student = named_outputs(s.student, s.forward(batch.inputs, s.objective.capture))
            loss, _ = s.objective(student, s.teacher(batch), batch.labels, mixed)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.config.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(s.student.parameters(), s.config.clip_grad)
            s.optimizer.step()

            running += loss.detach().double() * len(batch.indices)
            state.step += 1
            state.global_step += 1
            steps_here += 1
            if steps_here % CHECK_EVERY == 0:
                mean = check_finite(s, state, running) / (steps_here * s.batches.local)
                s.report.update(state.step * batch_size, loss=mean, lr=lr)
        check_finite(s, state, running)
    finally:
        s.report.stop()
        state.seconds += time.perf_counter() - started
        state.loss_sum += float(running)
        state.samples += steps_here * batch_size


def augmented(s: Session, state: TrainState, batch: Batch) -> tuple[Batch, Mixed | None]:
    """``batch`` augmented with random draws seeded by (seed, epoch, step, process): a resumed run, and a run with
    any number of loader workers, augments every step the same way."""
    if s.augment is None:
        return batch, None
    seed = np.random.SeedSequence([s.config.seed, state.epoch, state.step, s.world.rank, 30_000]).generate_state(1)
    result = s.augment(batch.inputs, torch.Generator().manual_seed(int(seed[0])))
    inputs, mixed = result if isinstance(result, tuple) else (result, None)
    return replace(batch, inputs=list(inputs)), mixed


def waited_for(batches, state: TrainState):
    """``batches``, adding the time spent waiting for each one (reading, decoding, copying it to the device) to
    ``state.data_seconds``: the share a user wins back with more loader workers or faster storage."""
    iterator = iter(batches)
    while True:
        clock = time.perf_counter()
        batch = next(iterator, None)
        state.data_seconds += time.perf_counter() - clock
        if batch is None:
            return
        yield batch


def end_epoch(s: Session, state: TrainState) -> None:
    val = evaluate(lambda b: named_outputs(s.student, s.forward(b.inputs, s.objective.capture)), s.val_teacher,
                   s.objective.for_validation(), s.val_batches(), s.world, s.device)
    loss = distributed.all_reduce_sum([state.loss_sum], s.device, s.world)[0] / max(state.samples, 1)
    record = {"epoch": state.epoch + 1, "loss": loss, "lr": s.optimizer.param_groups[0]["lr"],
              "seconds": state.seconds, "samples_per_s": state.samples / max(state.seconds, 1e-9),
              "data_wait": min(1.0, state.data_seconds / max(state.seconds, 1e-9)), "steps": state.global_step,
              "val": val}
    improved = state.best is None or score(val) > tuple(state.best["score"])
    if improved:
        keep_as_best(s, state, state.epoch + 1, val)
    state.history.append(record)
    s.report.line(f"epoch {state.epoch + 1:>3}/{s.epochs}  loss {loss:.4g}  {describe(val)}"
                  f"  {record['samples_per_s']:,.0f} samples/s, {record['data_wait']:.0%} waiting for data"
                  + ("  [green]best[/]" if improved else ""))
    state.epoch, state.step = state.epoch + 1, 0
    state.loss_sum = state.samples = 0
    state.seconds = state.data_seconds = 0.0
    save_checkpoint(s, state)
    training_mode(s)


def keep_as_best(s: Session, state: TrainState, epoch: int, val: dict) -> None:
    """The student's weights now are the ones to write unless a later epoch scores higher. Epoch 0 is the student
    before training: training that only makes it worse (a learning rate too high for a few hundred samples)
    leaves it as it was instead of writing a worse one."""
    state.best = {"epoch": epoch, "score": list(score(val)), "val": val,
                  "state": {k: v.detach().to("cpu", copy=True) for k, v in s.student.state_dict().items()}}


def training_mode(s: Session) -> None:
    """Train mode, unless BatchNorm is frozen (data-free runs: random inputs must not become statistics)."""
    s.student.train(not s.config.freeze_bn)


def named_outputs(student: OnnxModule, result: tuple) -> dict[str, torch.Tensor]:
    """``(outputs, captured)`` of a capture call -> one dict by tensor name."""
    outputs, captured = result
    values = dict(zip(student.output_names, outputs))
    values.update(captured)
    return values


def check_finite(s: Session, state: TrainState, running: torch.Tensor) -> float:
    """The running loss sum as a float; every process stops when it is NaN/Inf."""
    value = float(running)
    if distributed.broadcast_flag(not torch.isfinite(running).item(), s.device, s.world):
        s.report.stop()
        kept = f"; the last good checkpoint (epoch {state.epoch}) is in {s.work_dir}" if s.work_dir and state.epoch else ""
        raise Diverged(f"the loss became NaN/Inf at epoch {state.epoch + 1}, step {state.step}{kept}; "
                       f"lower --lr (now {s.config.peak_lr:g}), or keep clip_grad above 0 (the recipe's distill section)")
    return value


def save_checkpoint(s: Session, state: TrainState) -> None:
    if s.work_dir is None or not s.world.main:
        return
    checkpoint.save({
        "fingerprint": s.fingerprint,
        "recalibration": s.recalibration,
        "train": state.to_checkpoint(),
        "student": s.student.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }, s.work_dir)


def restore(s: Session, saved: dict) -> TrainState:
    """The state a checkpoint was saved in, loaded into the session's student and optimiser.

    Under torchrun only rank 0 checkpoints, so every rank resumes with rank 0's partial loss sum of the epoch in
    progress, and the epoch's reported loss counts it once per process: an estimate of the other ranks' sums
    (same samples per rank), within 1% in a test, where the weights resume exactly. Saving every rank's sum would
    need a collective at Ctrl-C, which the ranks do not reach at the same step."""
    s.student.load_state_dict(saved["student"])
    s.optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return TrainState(**copy.deepcopy(saved["train"]))
