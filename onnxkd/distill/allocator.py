"""Keep training's memory in the process between steps (glibc's malloc), so that steps do not page-fault.

Every training step allocates and frees the same large buffers (activations, gradients, the batch). glibc's
malloc serves blocks above its mmap threshold with a fresh ``mmap`` and gives them back on ``free``, and trims
the top of its heap once enough is free there; its threshold moves with the sizes freed so far, so it depends on
what the process did before training. When buffers go back to the system, the next step touches new pages and
the kernel zero-fills every one of them.

Measured (benchmarks/data_pipeline.py's task, 4,000 JPEGs, a small residual CNN student, --workers 0, 2 CPU
cores): reading the images took the training process to 2.8 million minor page faults and 6 s of system time
over 300 steps, against 88,000 for the same pixels read from a .npy; its steps ran at 0.64x of the .npy run's
(ReLU and the backward pass slowest: they write the most fresh memory). With a fixed 32 MiB mmap threshold and
a 512 MiB trim threshold both runs made about 80,000 faults and the image run trained at 0.96x of the .npy one.

The settings are the process's (as ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` would set them; loader
workers forked later inherit them). They hold freed memory for reuse rather than returning it, up to the trim
threshold: the peak, which training reaches in its first steps anyway, does not change. Elsewhere than glibc
(macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes

from onnxkd.freed_memory import glibc

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 512 * 2**20

_tuned = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; True when it was tuned (now or before)."""
    global _tuned
    libc = glibc()
    if _tuned or libc is None:  # not glibc
        return _tuned
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned
