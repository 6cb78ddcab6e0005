"""Hand freed memory back to the system between pipeline stages.

glibc keeps what a stage freed in its heap for the next allocation (distillation asks it to keep up to 512 MiB
for its steps, ``distill/allocator.py``, and its mmap threshold grows with the large blocks torch and numpy free),
and the stages after it (optimize, quantize, validate, each with onnxruntime sessions of both models) then start
on top of it: after distilling a 269 MB MLP's student, compress held 1.54 GB, 0.82 GB once trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys


def release() -> None:
    """Collect garbage and return the freed heap to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (``mallopt``, ``malloc_trim``); None elsewhere (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc's own: musl has neither)
    except (OSError, AttributeError):
        return None
    return libc
