"""Hand freed memory back to the system between pipeline stages.

glibc keeps what a stage freed in its heap for the next allocation (its mmap threshold grows with the large
blocks torch and numpy free, so later blocks come from the heap and stay there), and the stages after it
(optimize, quantize, validate, each with onnxruntime sessions of both models) then start on top of it: after
distilling a 269 MB MLP's student, compress held 1.54 GB, 0.82 GB once trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import functools


def release() -> None:
    """Collect garbage and return the freed heap to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
