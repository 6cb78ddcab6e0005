"""One run at a time in a work folder. Two ``compress`` runs with the same ``-o`` (or ``--work-dir``) cleared and
overwrote each other's stage files, and the one that lost died on a missing file; the second now refuses.

The lock is a file holding the owner's process id, created exclusively; a lock whose process is gone (a run
killed outright) is taken over, so a crash never blocks the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from onnxkd.errors import OnnxkdError

NAME = "onnxkd.lock"


def acquire(work: Path) -> Path:
    """Take ``work``'s lock (making the folder), or refuse naming the run that holds it. The processes of one
    torchrun job are one run: rank 0 alone takes the lock (the other ranks never open the work state:
    ``pipeline._follow``)."""
    work.mkdir(parents=True, exist_ok=True)
    lock = work / NAME
    for _ in range(2):  # a stale lock is removed once, then taken
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and owner != os.getpid() and _alive(owner):
                raise OnnxkdError(f"{work}: another onnxkd run (process {owner}) is working in this folder; wait for "
                                  "it, or give this run another -o or --work-dir") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as file:
            file.write(str(os.getpid()))
        return lock
    raise OnnxkdError(f"{work}: cannot take the work folder's lock ({lock})")


def release(work: Path) -> None:
    lock = work / NAME
    if _owner(lock) == os.getpid():
        lock.unlink(missing_ok=True)


def _owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
