"""onnxruntime sessions for teacher and student, built from one ``SessionConfig`` so they are comparable."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import onnxruntime as ort

from onnxkd.data.batch_axes import input_batch_axes, into_model
from onnxkd.errors import OnnxkdError

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    provider: str = "auto"  # auto | cpu | cuda | tensorrt
    threads: int = 0  # intra-op threads; 0 = onnxruntime's default (one per physical core)
    graph_opt: str = "all"  # disable | basic | extended | all

    def to_dict(self) -> dict:
        return {"provider": self.provider, "threads": self.threads, "graph_optimization_level": self.graph_opt,
                "providers": resolve_providers(self.provider)}


def resolve_providers(provider: str) -> list[str]:
    """Execution providers in priority order; CPU stays last as onnxruntime's fallback for unsupported nodes."""
    if provider == "auto":
        return [p for p in PROVIDERS.values() if p in usable_providers()]
    if provider not in PROVIDERS:
        raise OnnxkdError(f"--provider {provider!r}: choose from auto, {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise OnnxkdError(
            f"--provider {provider}: {wanted} is not available in this onnxruntime "
            f"(available: {', '.join(available)})"
        )
    if wanted not in usable_providers():
        raise OnnxkdError(
            f"--provider {provider}: this onnxruntime lists {wanted} but cannot start it here "
            "(its libraries are missing or do not match: see onnxruntime's requirements for it)"
        )
    return [wanted] + ([] if wanted == PROVIDERS["cpu"] else [PROVIDERS["cpu"]])


@functools.cache
def usable_providers() -> tuple[str, ...]:
    """The providers a session really starts on. onnxruntime-gpu lists TensorRT (and CUDA) whether or not
    their libraries are installed, and a session asked for a missing one quietly runs on the CPU: a figure
    reported for "tensorrt" would then be the CPU's (or CUDA's, through onnxruntime's own fallback)."""
    usable = []
    for name in ort.get_available_providers():
        if name == PROVIDERS["cpu"] or name not in PROVIDERS.values() or _starts(name):
            usable.append(name)
    return tuple(usable)


def _starts(provider: str) -> bool:
    """Whether a one-node session gets ``provider`` as its first provider (what onnxruntime really runs)."""
    import onnx

    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # A provider whose libraries are missing logs an error and (with onnxruntime's Python fallback) prints an
    # "EP Error" banner: the answer is the point here, not the user's business.
    ort.set_default_logger_severity(4)
    try:
        with warnings.catch_warnings():  # "not in available provider names"
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                           providers=[provider, PROVIDERS["cpu"]], enable_fallback=0)
    except Exception:  # the library did not load
        return False
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default (it offers no getter)
    return session.get_providers()[0] == provider


def session_options(config: SessionConfig) -> ort.SessionOptions:
    if config.graph_opt not in OPT_LEVELS:
        raise OnnxkdError(f"--graph-opt {config.graph_opt!r}: choose from {', '.join(OPT_LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = OPT_LEVELS[config.graph_opt]
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1  # sequential execution: parallel branches would add timing noise
    # onnxruntime logs to stderr, which would break the one-line error rule: warnings, and errors at run time,
    # which also raise (the command then reports them in its one line)
    options.log_severity_level = 4
    # Teacher and student run alternately, each with its own thread pool. By default a pool's workers keep
    # spinning after a run and take cores from the other model's next run: interleaved speed-ups came out
    # 1.2-1.8x too high on a 2-core CPU (zoo MobileNetV2, batch 1: 1.95x measured, 1.07x with one shared
    # pool). Stopping the spin when a run ends makes every run start from the same state.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def create_session(source: str | bytes, config: SessionConfig, label: str,
                   batch_axes: Mapping[str, int] | None = None) -> tuple[ort.InferenceSession, float]:
    """The session and its creation time in ms (load + graph optimisation + kernel setup). It is fed samples on
    axis 0, like every batch in onnxkd: see ``samples_first`` (``batch_axes``: where the inputs' batches are, when
    the graph's outputs do not tell, as in a copy that exposes inner tensors)."""
    providers = resolve_providers(config.provider)
    options = session_options(config)
    start = time.perf_counter_ns()
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/RuntimeException: all a bad model
        raise OnnxkdError(f"{label}: onnxruntime cannot load the model ({first_line(exc)})") from None
    return samples_first(session, batch_axes), (time.perf_counter_ns() - start) / 1e6


def samples_first(session: ort.InferenceSession, batch_axes: Mapping[str, int] | None = None):
    """``session``, or where an input takes its batch on another axis (a seq-first export), a ``SamplesFirst``
    around it."""
    if batch_axes is None:
        batch_axes = input_batch_axes({i.name: i.shape for i in session.get_inputs()},
                                      [o.shape[0] if o.shape else None for o in session.get_outputs()])
    return SamplesFirst(session, dict(batch_axes)) if batch_axes else session


class SamplesFirst:
    """An onnxruntime session fed samples on axis 0: each input is moved to the model's batch axis as it enters.
    The feeds of the last run are kept moved, so that timing the same feeds again measures the model alone."""

    def __init__(self, session: ort.InferenceSession, batch_axes: dict[str, int]):
        self.session, self.batch_axes = session, batch_axes
        self._last: tuple[Mapping, dict] | None = None

    def run(self, output_names, feeds: Mapping, *args, **kwargs):
        if self._last is None or self._last[0] is not feeds:
            self._last = feeds, into_model(feeds, self.batch_axes)
        return self.session.run(output_names, self._last[1], *args, **kwargs)

    def __getattr__(self, name: str):  # get_inputs, get_outputs, get_providers, end_profiling...
        return getattr(self.session, name)


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line, at most 240 characters (for one-line errors)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:240] if lines else type(exc).__name__
