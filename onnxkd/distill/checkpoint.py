"""Resumable state: written atomically after every epoch (and on Ctrl-C), read by ``--resume``.

A checkpoint holds everything the next step depends on: the student's parameters and running
statistics, the optimiser's moments, the position (epoch, step), torch's RNG (dropout), the best
epoch's weights and the history. The batch order needs nothing: it is a function of (seed, epoch).
A fingerprint of the run (model hashes, data size, options that change the trajectory) is stored too,
so ``--resume`` refuses a checkpoint of another run instead of silently mixing two.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from onnxkd.errors import OnnxkdError

NAME = "distill-checkpoint.pt"
VERSION = 1


def path_in(work_dir: Path) -> Path:
    return Path(work_dir) / NAME


def save(state: dict, work_dir: Path) -> Path:
    """Write ``state`` to ``work_dir/distill-checkpoint.pt`` atomically (temp file, then rename)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    target = path_in(work_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{NAME}.", suffix=".tmp", dir=work_dir)
    os.close(fd)
    try:
        torch.save(dict(state, version=VERSION), tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(work_dir: Path, fingerprint: dict) -> dict:
    """The checkpoint in ``work_dir``, after checking it belongs to this run."""
    target = path_in(work_dir)
    if not target.exists():
        raise OnnxkdError(f"--resume: no checkpoint in {work_dir} (expected {target.name}); run without --resume")
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a truncated or foreign file: say so in one line)
        raise OnnxkdError(f"--resume: cannot read {target} ({type(exc).__name__})") from None
    if state.get("version") != VERSION:
        raise OnnxkdError(f"--resume: {target} was written by another onnxkd version")
    saved = state.get("fingerprint", {})
    different = sorted(k for k in fingerprint if saved.get(k) != fingerprint[k])
    if different:
        before, now = saved.get("options") or {}, fingerprint.get("options") or {}
        options = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
                   if before.get(k) != now.get(k)]  # the flags, named as the recipe names them
        shown = ", ".join(different) + (f": {'; '.join(options[:4])}" if options else "")
        raise OnnxkdError(f"--resume: the checkpoint in {work_dir} is from a different run "
                          f"({shown} changed); run without --resume to start over")
    return state


def remove(work_dir: Path) -> None:
    """Drop the checkpoint once the student is written; the folder goes too when it is left empty."""
    target = path_in(work_dir)
    if target.exists():
        target.unlink()
    try:
        Path(work_dir).rmdir()
    except OSError:
        pass
