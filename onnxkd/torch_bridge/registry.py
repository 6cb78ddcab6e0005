"""The op table: (domain, op_type) -> implementations by since_version.

One small function per op, registered with ``@register("Relu", since=6)``. The function's signature
IS its contract: positional parameters after ``ctx`` are the ONNX inputs in order (missing optional
inputs arrive as None), keyword-only parameters are the ONNX attributes with their defaults.
A model with opset V uses the implementation with the greatest ``since <= V``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable

OpFn = Callable[..., Any]

_TABLE: dict[tuple[str, str], list[tuple[int, OpFn]]] = {}

# ONNX writes the default domain as "" or "ai.onnx"; both mean the same operator set.
DEFAULT_DOMAIN = ""


def normalize_domain(domain: str | None) -> str:
    return DEFAULT_DOMAIN if domain in (None, "", "ai.onnx") else domain


def register(op_type: str, since: int = 1, domain: str = DEFAULT_DOMAIN) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` for ``op_type`` from opset ``since`` on (until a later registration takes over)."""

    def decorate(fn: OpFn) -> OpFn:
        versions = _TABLE.setdefault((normalize_domain(domain), op_type), [])
        versions[:] = [v for v in versions if v[0] != since]
        bisect.insort(versions, (since, fn), key=lambda v: v[0])
        return fn

    return decorate


def lookup(op_type: str, domain: str, opset: int) -> OpFn | None:
    """The implementation for ``op_type`` at ``opset`` of ``domain``, or None if unsupported."""
    _load_ops()
    versions = _TABLE.get((normalize_domain(domain), op_type))
    if not versions:
        return None
    candidates = [fn for since, fn in versions if since <= opset]
    return candidates[-1] if candidates else None


def supported_ops() -> dict[tuple[str, str], list[int]]:
    """(domain, op_type) -> registered since_versions, for `onnxkd inspect`."""
    _load_ops()
    return {key: [since for since, _ in versions] for key, versions in sorted(_TABLE.items())}


_loaded = False


def _load_ops() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from onnxkd.torch_bridge import ops  # noqa: F401  (importing registers every family)


@dataclass
class RunState:
    """What changes between forward calls and every op may need: train/eval and the device."""

    training: bool = False
    device: Any = None


@dataclass
class OpContext:
    """Static facts about one node, handed to its op function as ``ctx``."""

    node_name: str
    op_type: str
    domain: str
    opset: int
    num_outputs: int
    state: RunState
    # Names of this node's inputs (ops like BatchNormalization need to know which are buffers).
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def training(self) -> bool:
        return self.state.training
