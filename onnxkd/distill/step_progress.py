"""Iterative pruning's progress in a work folder, so that ``compress --steps K --resume`` continues after
the last completed step instead of starting over.

After a step is pruned, its student is saved (``step-<k>.pruned.onnx``) with the state (``steps.json``: the
final channel counts fixed up front, the composed plan, the steps' records, and whether step k is distilled
yet); after its distillation, the distilled student is saved as ``step-<k>.onnx``. Each file has a name of its
own and the loop goes on from the model read back from it: a model loaded lazily reads its weights from its
file, so a file is only removed once nothing in memory reads from it (overwriting a student with itself, as a
distillation that improved nothing returns it, removed the weights it was still reading). The distillation
between steps checkpoints its own epochs in ``distill/``: it trains the saved file, so a resumed run trains the
very same student (the checkpoint's fingerprint is the file's hash). Whether the run is the same run is the
caller's check (``compress`` compares the teacher, recipe and data before any stage); the ratio and step count
are checked here too, for callers that skip it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxkd import model as model_io
from onnxkd.errors import OnnxkdError
from onnxkd.json_file import write_json

STATE = "steps.json"


@dataclass
class StepProgress:
    folder: Path | None  # None: kept in memory only (nothing to resume)
    ratio: float
    steps: int
    final_counts: dict[int, int] = field(default_factory=dict)  # teacher group id -> channels at the end
    composed: dict[int, list[int]] = field(default_factory=dict)  # teacher group id -> kept teacher channels
    history: list[dict] = field(default_factory=list)  # one record per step pruned
    distilled: bool = True  # whether the last step in history has had its distillation

    @property
    def distill_dir(self) -> Path:
        return self.folder / "distill"

    def model_path(self) -> Path:
        """The file of the last step in history: its pruned student until it is distilled, then the distilled."""
        step = len(self.history)
        return self.folder / (f"step-{step}.onnx" if self.distilled else f"step-{step}.pruned.onnx")

    def save(self, model: ir.Model | None = None) -> ir.Model | None:
        """Write the state (and, when given, the student of the last step in history) atomically; returns the
        student read back from its file, which the caller goes on with: the earlier files go, and nothing
        may read from them any more."""
        if self.folder is None:
            return model
        self.folder.mkdir(parents=True, exist_ok=True)
        if model is not None:
            path = self.model_path()
            model_io.save(model, path)
            model = model_io.load(path)
        state = {"ratio": self.ratio, "steps": self.steps, "distilled": self.distilled,
                 "final_counts": {str(g): n for g, n in self.final_counts.items()},
                 "composed": {str(g): kept for g, kept in self.composed.items()}, "history": self.history}
        write_json(self.folder / STATE, state)
        if model is not None:
            for older in self.folder.glob("step-*.onnx"):
                if older != self.model_path():
                    model_io.remove(older)
        return model

    def student(self) -> ir.Model:
        return model_io.load(self.model_path())

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def start(folder: str | os.PathLike | None, ratio: float, steps: int) -> StepProgress:
    """A fresh record (anything an earlier run left in ``folder`` goes; None: nothing is saved)."""
    progress = StepProgress(None if folder is None else Path(folder), ratio, steps)
    progress.remove()
    return progress


def resume(folder: str | os.PathLike, ratio: float, steps: int) -> StepProgress | None:
    """What an interrupted run completed in ``folder``; None when it completed nothing there."""
    folder = Path(folder)
    path = folder / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OnnxkdError(f"--resume: cannot read {path} ({type(exc).__name__}); run without --resume") from None
    if state.get("ratio") != ratio or state.get("steps") != steps:
        raise OnnxkdError(f"--resume: the pruning steps in {folder} were for ratio {state.get('ratio')} in "
                          f"{state.get('steps')} steps, not {ratio} in {steps}; run without --resume")
    progress = StepProgress(folder, ratio, steps, {int(g): n for g, n in state["final_counts"].items()},
                            {int(g): kept for g, kept in state["composed"].items()}, state["history"],
                            state["distilled"])
    if progress.history and not progress.model_path().exists():
        raise OnnxkdError(f"--resume: {progress.model_path()} is missing; run without --resume")
    return progress
