"""Where the numbers were measured: a report is only comparable with one from the same environment."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxkd import __version__


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(session_config: dict, used_providers: list[str]) -> dict:
    return {
        "onnxruntime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "numpy_version": np.__version__,
        "onnxkd_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "available_providers": ort.get_available_providers(),
        "providers": used_providers,
        "threads": session_config["threads"],
        "graph_optimization_level": session_config["graph_optimization_level"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
