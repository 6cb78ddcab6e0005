"""Whether, and where, the teacher's targets are computed once before training.

- They fit ``--cache-mb``: in memory.
- They do not: a disk cache in the work folder pays when one pass of the teacher plus writing, then reading the
  rows back every epoch, costs less than running the teacher at every step. Both are measured here, on this
  machine (the teacher on the probe batch, the disk with a synced, uncached file), and the choice is printed
  with its figures: a fast GPU teacher usually beats a disk, a slow CPU teacher rarely does.
- Augmented training batches differ at every step: only the validation targets are cached then.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from onnxkd.distill.loader import Batch, Loader
from onnxkd.distill.teacher import Teacher, bytes_per_sample
from onnxkd.distill.teacher_store import DiskStore, MemoryStore, disk_seconds_per_byte

FOLDER = "teacher-cache"


def cache_teacher(train_teacher: Teacher, val_teacher: Teacher, train: Loader, val: Loader, probe: Batch,
                  config, report, *, augmenting: bool, epochs: int, work_dir: Path | None, rank: int = 0) -> dict:
    """Fill the teachers' caches where that pays; returns what was done, for the result and the report:
    {"used", "where" (memory | disk | none), "mb", "seconds", "reason", "measured" (ms per sample)}."""
    started = time.perf_counter()
    train_teacher.forward(probe.inputs)  # warm-up: the first call pays for allocations
    timed = time.perf_counter()
    per_sample = bytes_per_sample(train_teacher.forward(probe.inputs))
    teacher_seconds = (time.perf_counter() - timed) / len(probe.indices)
    cached = [(val_teacher, val)] if augmenting else [(train_teacher, train), (val_teacher, val)]
    samples = sum(len(loader.dataset) for _, loader in cached)
    megabytes = per_sample * samples / 2**20
    info = {"used": False, "where": "none", "mb": round(megabytes, 3), "seconds": 0.0}
    if augmenting:
        info["reason"] = "augmenting: the teacher sees each augmented batch"
    if megabytes <= config.cache_mb:
        stores = [MemoryStore() for _ in cached]
        info["where"] = "memory"
    else:
        folder = None if work_dir is None else Path(work_dir) / f"{FOLDER}-{rank}"
        use_disk, info["reason"], info["measured"] = _disk_pays(folder, per_sample, samples, teacher_seconds, epochs,
                                                               megabytes, config.cache_mb)
        report.line(info["reason"])
        if not use_disk:
            return info
        shutil.rmtree(folder, ignore_errors=True)  # a resumed run's earlier cache: filled again from scratch
        stores = [DiskStore(folder / str(i), train.device) for i in range(len(cached))]
        info["where"] = "disk"
    for (teacher, loader), store in zip(cached, stores):
        report.start("teacher outputs", len(loader.dataset))
        teacher.fill(loader.in_order(config.batch_size), len(loader.dataset), store, report.update)
        report.stop()
    info.update(used=not augmenting, seconds=time.perf_counter() - started)
    return info


def _disk_pays(folder: Path | None, row_bytes: int, samples: int, teacher_seconds: float, epochs: int,
               megabytes: float, budget: float) -> tuple[bool, str, dict]:
    """(use a disk cache, the line that says why, the measured figures in ms per sample)."""
    over = f"teacher outputs ({megabytes:,.4g} MB) exceed --cache-mb {budget:,.4g}"
    measured = {"teacher_ms_per_sample": teacher_seconds * 1e3}
    if folder is None:
        return False, f"{over}: the teacher runs at every step (no work folder for a disk cache)", measured
    free = shutil.disk_usage(folder.parent if folder.parent.exists() else Path.cwd()).free
    if free < 1.2 * megabytes * 2**20:
        return False, (f"{over}: the teacher runs at every step ({free / 2**20:,.0f} MB free in {folder.parent}, "
                       "too little for a disk cache)"), measured
    write, read = disk_seconds_per_byte(folder.parent)
    measured.update(disk_write_ms_per_sample=write * row_bytes * 1e3, disk_read_ms_per_sample=read * row_bytes * 1e3)
    per_step = epochs * samples * teacher_seconds
    on_disk = samples * (teacher_seconds + write * row_bytes) + epochs * samples * read * row_bytes
    figures = (f"teacher {teacher_seconds * 1e3:.3g} ms/sample, disk read {read * row_bytes * 1e3:.3g} ms/sample, "
               f"over {epochs} epoch(s): {on_disk:,.3g} s cached vs {per_step:,.3g} s per step")
    if on_disk < per_step:
        return True, f"{over}: caching them on disk in {folder} (measured: {figures})", measured
    return False, f"{over}: the teacher runs at every step (measured: {figures})", measured


def remove_disk_cache(work_dir: Path | None, rank: int = 0) -> None:
    if work_dir is not None:
        shutil.rmtree(Path(work_dir) / f"{FOLDER}-{rank}", ignore_errors=True)
