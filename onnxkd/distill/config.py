"""Every option of a distillation run, with the defaults that work without tuning.

The same object feeds ``onnxkd distill``, ``onnxkd.distill(...)`` and ``onnxkd compress``; it is saved
in the result (and in a compress recipe) so a run can be replayed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from onnxkd.errors import OnnxkdError

LOSSES = ("kl", "mse", "cosine")  # what --loss names (distill/losses.py computes them)

OPTIMIZERS = ("adamw", "sgd")
AUGMENTS = ("none", "crop", "light", "strong")  # see augment.py
DEFAULT_LR = {"adamw": 1e-3, "sgd": 0.05}
# Aim for this many optimizer steps when --epochs/--steps are not given, within the epoch bounds below:
# a pruned student starts from the teacher's weights and recovers in a few thousand steps.
TARGET_STEPS = 2000
MIN_EPOCHS, MAX_EPOCHS = 3, 40


@dataclass
class DistillConfig:
    epochs: int | None = None  # None: chosen from the data size (TARGET_STEPS, within MIN/MAX_EPOCHS)
    steps: int | None = None  # optimizer steps in all, instead of epochs
    lr: float | None = None  # peak learning rate; None: DEFAULT_LR of the optimizer
    batch_size: int = 64  # the global batch (split across DDP processes)
    optimizer: str = "adamw"
    weight_decay: float = 0.0  # the student starts from trained weights: no decay by default
    warmup: float = 0.05  # fraction of the steps spent warming the learning rate up from 0
    clip_grad: float = 5.0  # max gradient norm; 0 disables clipping
    temperature: float = 4.0
    alpha: float = 0.5  # weight of KD against cross-entropy on labels (labels present)
    loss: dict[str, str] = field(default_factory=dict)  # output name or "*" -> "kl" | "mse" | "cosine"
    output_weights: dict[str, float] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)  # tensor names, or "auto"
    hint_weight: float = 1.0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:N"
    bf16: bool = False  # bf16 autocast (the losses stay fp32)
    compile: bool = False  # torch.compile the student
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager" compiles fast, for checks)
    seed: int = 0
    val_fraction: float = 0.1  # held out of --data when no --val-data is given
    recalibrate_bn: bool = True
    freeze_bn: bool = False  # train with BatchNorm (and Dropout) in eval mode: running statistics untouched
    bn_samples: int = 4096  # at most this many training samples for BN recalibration
    cache_mb: float = 2048.0  # teacher outputs are cached when they fit in this many MB
    # "none" | "crop" | "light" | "strong", or (API) a callable (inputs, torch.Generator) -> inputs | (inputs, Mixed)
    augment: str | Callable[..., Any] = "none"
    workers: int | None = None  # loader worker processes; None: min(8, CPUs - 1) for data read from disk, else 0
    data_free_samples: int = 1024  # random inputs when there is no data

    def __post_init__(self):
        if isinstance(self.hints, str):  # hints="auto", as --hint auto: one name, not its letters
            self.hints = [self.hints]
        if not isinstance(self.loss, dict):  # loss="mse" or ["logits=mse"], as --loss takes them
            from onnxkd.distill.targets import parse_loss_option

            self.loss = parse_loss_option(self.loss)
        self.check()

    def check(self) -> None:
        """One-line errors for options no run could use."""
        if self.epochs is not None and self.steps is not None:
            raise OnnxkdError("--epochs and --steps: give one of them, not both")
        for name in ("epochs", "steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OnnxkdError(f"--{name} {value}: must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise OnnxkdError(f"--optimizer {self.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise OnnxkdError(f"--lr {self.lr}: must be a positive number")
        if self.batch_size < 1:
            raise OnnxkdError(f"--batch-size {self.batch_size}: must be >= 1")
        if not self.temperature > 0:
            raise OnnxkdError(f"--temperature {self.temperature}: must be > 0")
        if not 0 <= self.alpha <= 1:
            raise OnnxkdError(f"--alpha {self.alpha}: must be in [0, 1]")
        if not 0 <= self.warmup < 1:
            raise OnnxkdError(f"--warmup {self.warmup}: must be in [0, 1)")
        if not 0 < self.val_fraction < 1:
            raise OnnxkdError(f"val_fraction {self.val_fraction}: must be in (0, 1)")
        for name in ("weight_decay", "clip_grad", "hint_weight", "cache_mb"):
            if getattr(self, name) < 0:
                raise OnnxkdError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")
        if isinstance(self.augment, str) and self.augment.startswith("callable "):
            raise OnnxkdError(f"augment: the recipe's run augmented with a Python function ({self.augment[9:]}), "
                              "which a recipe cannot hold; set its distill.augment to one of "
                              + ", ".join(AUGMENTS) + " (the function can be given again with augment=)")
        if not callable(self.augment) and self.augment not in AUGMENTS:
            raise OnnxkdError(f"--augment {self.augment!r}: choose {', '.join(AUGMENTS)}")
        if self.workers is not None and self.workers < 0:
            raise OnnxkdError(f"--workers {self.workers}: must be >= 0 (0 reads data in the training process)")
        if any(w < 0 for w in self.output_weights.values()):
            raise OnnxkdError("--output-weight: weights must be >= 0")
        for output, kind in self.loss.items():
            if kind not in LOSSES:
                raise OnnxkdError(f"--loss {output}={kind}: choose {', '.join(LOSSES[:-1])} or {LOSSES[-1]}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def schedule(self, steps_per_epoch: int) -> tuple[int, int]:
        """(epochs, total optimizer steps) for a data set of ``steps_per_epoch`` batches."""
        if self.steps is not None:
            return math.ceil(self.steps / steps_per_epoch), self.steps
        epochs = self.epochs or min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
        return epochs, epochs * steps_per_epoch

    def to_dict(self) -> dict:
        data = asdict(self)
        if callable(self.augment):  # a recipe names it; replaying the run needs the same callable again
            data["augment"] = f"callable {getattr(self.augment, '__qualname__', type(self.augment).__name__)}"
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OnnxkdError(f"unknown distillation option(s): {', '.join(unknown)}")
        return cls(**data)
