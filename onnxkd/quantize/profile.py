"""Time per node from onnxruntime's profiler, named after the nodes of the graph the user gave.

onnxruntime renames what it fuses: a QDQ Conv runs as ``<conv name>_token_<n>`` (QLinearConv), and a float Conv
rewritten for the NCHWc layout as ``<name of the tensor it ends with>_nchwc`` (its activation and residual Add
fused in). Both are traced back to the original compute node, as is the Pad of a convolution's input
(channel_pad.py); what cannot be (layout reorders, Transposes, Quantize/DequantizeLinear) is overhead, judged by
the whole-model timing instead.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from onnxkd.quantize.channel_pad import SUFFIX as PADDED
from onnxkd.validate.sessions import SessionConfig, session_options

_TOKEN = re.compile(r"_token_\d+$")
OVERHEAD = "(overhead)"


# A profile covers at least this long (and ``runs`` runs, at most MAX_RUNS): 10 runs of a 3 ms model were too
# few to settle a decision; the first quantize of a benchmark process once profiled a padded stem as no faster.
MIN_PROFILE_S = 0.3
MAX_RUNS = 200


def node_times(path: Path, feeds: dict[str, np.ndarray], config: SessionConfig, runs: int = 10) -> dict[str, float]:
    """Original node name -> microseconds per run (``OVERHEAD`` for what maps to no node)."""
    import onnxruntime as ort

    from onnxkd.validate.sessions import resolve_providers, samples_first

    options = session_options(config)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix("")) + "-profile"
    session = samples_first(ort.InferenceSession(str(path), sess_options=options,
                                                 providers=resolve_providers(config.provider)))
    for _ in range(3):  # warm-up runs are profiled too: they are dropped below by taking the last ``runs``
        session.run(None, feeds)
    started, done = time.perf_counter(), 0
    while done < runs or (time.perf_counter() - started < MIN_PROFILE_S and done < MAX_RUNS):
        session.run(None, feeds)
        done += 1
    runs = done
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return attribute(events, onnx.load(str(path), load_external_data=False).graph, runs)


def attribute(events: list[dict], graph: onnx.GraphProto, runs: int) -> dict[str, float]:
    """Sum the kernel times of the last ``runs`` model runs per original node."""
    run_starts = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    since = run_starts[-runs] if len(run_starts) >= runs else 0
    resolve = _resolver(graph)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time") or event.get("ts", 0) < since:
            continue
        totals[resolve(name[: -len("_kernel_time")])] += event.get("dur", 0) / runs
    return dict(totals)


def _resolver(graph: onnx.GraphProto):
    names = {node.name for node in graph.node}
    producer = {out: node for node in graph.node for out in node.output}

    def resolve(name: str) -> str:
        name = _TOKEN.sub("", name)
        if name.endswith(PADDED):  # a convolution's input padded for the fast int8 kernel: part of its cost
            return name[: -len(PADDED)]
        if name in names:
            return name
        if name.endswith("_nchwc") and name[:-6] in producer:
            node = producer[name[:-6]]
            # walk back from the fused chain's last op (Relu, Clip, Add) to the convolution that starts it
            while node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") and node.input \
                    and node.input[0] in producer:
                node = producer[node.input[0]]
            return node.name
        return OVERHEAD

    return resolve
