"""Which process of a torchrun job this is, read without importing torch (``import onnxkd`` and the CLI stay
torch-free). ``onnxkd.distill.distributed`` joins the process group; this only answers who prints and writes."""

from __future__ import annotations

import os


def is_rank_zero() -> bool:
    """Rank 0 of a torchrun job (torchrun sets RANK), or a process of its own."""
    return os.environ.get("RANK", "0") == "0"
