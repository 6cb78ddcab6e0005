"""Between pipeline stages the freed heap goes back to the system (glibc's malloc_trim): distillation's
allocator settings keep up to 512 MiB of it for its steps, and the stages after it started on top of that."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np
    from onnxkd import freed_memory
    from onnxkd.distill.allocator import keep_freed_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    assert keep_freed_memory()  # as distillation leaves the process
    start = rss_mb()
    blocks = [np.ones(2**21) for _ in range(24)]  # 24 blocks of 16 MiB, below the mmap threshold: the heap
    del blocks
    kept = rss_mb() - start
    freed_memory.release()
    print(kept, rss_mb() - start)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_release_hands_the_freed_heap_back():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept, after = map(float, done.stdout.split())
    assert kept > 300  # freed, yet still the process's
    assert after < 50
