"""Training keeps freed memory in the process: the kernel's page-fault counter is the oracle."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Steps that allocate, fill and free 8 MiB buffers, first under glibc's lowest fixed mmap threshold (each buffer
# is then a fresh mapping, as the image runs found it), then after keep_freed_memory(); the minor page faults of
# each phase are printed.
STEPS = """
import ctypes, resource, sys
import numpy as np
from onnxkd.distill.allocator import M_MMAP_THRESHOLD, keep_freed_memory

def faults_of_steps():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        buffer = np.empty(2**21, np.float32)
        buffer.fill(1.0)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)
untuned = faults_of_steps()
assert keep_freed_memory() and keep_freed_memory()  # once per process; the second call finds it done
print(untuned, faults_of_steps())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_steps_reuse_freed_buffers_instead_of_faulting_in_fresh_pages():
    out = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, check=True).stdout
    untuned, tuned = map(int, out.split())
    # each fresh 8 MiB mapping faults hundreds of times (thousands of 4 KiB pages, fewer where the kernel maps
    # larger blocks per fault); reused buffers fault only the first time
    assert untuned > 40 * 100
    assert tuned * 10 < untuned
