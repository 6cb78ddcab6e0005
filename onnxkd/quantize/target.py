"""Which int8 flavour is fast where the model will run.

On x86 CPUs onnxruntime's int8 kernels multiply uint8 activations by int8 weights (U8S8, the VNNI
instruction); int8 activations (S8S8) take a slower path there: on this project's CPU resnet18 ran at 0.79x
of fp32 with S8S8 and 4.4x with U8S8 (the issue's table; the zoo ResNet at 64x64 here: 0.57x vs 1.75x at batch
8). CUDA/TensorRT and ARM CPUs want S8S8. x86 CPUs without VNNI saturate U8S8 products in 16 bits, which is why
onnxruntime advises 7-bit weights (reduce_range) there.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from onnxkd.errors import OnnxkdError

ACTIVATION_TYPES = ("auto", "uint8", "int8")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class Target:
    device: str  # "cpu-x86", "cpu-arm", "cuda", "tensorrt"
    activation: str  # "uint8" | "int8"
    reduce_range: bool  # 7-bit weights
    reason: str

    def to_dict(self) -> dict:
        return {"device": self.device, "activation": self.activation, "weights": "int8",
                "reduce_range": self.reduce_range, "reason": self.reason}


def choose_target(providers: list[str], activation_type: str = "auto", machine: str | None = None,
                  cpu_flags: set[str] | None = None) -> Target:
    """The activation type for the first execution provider in ``providers`` (``--activation-type`` wins)."""
    if activation_type not in ACTIVATION_TYPES:
        raise OnnxkdError(f"--activation-type {activation_type!r}: choose from {', '.join(ACTIVATION_TYPES)}")
    first = providers[0] if providers else "CPUExecutionProvider"
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if first == "TensorrtExecutionProvider":
        device, fast, why = "tensorrt", "int8", "TensorRT runs int8 activations (S8S8)"
    elif first == "CUDAExecutionProvider":
        device, fast, why = "cuda", "int8", "CUDA runs int8 activations (S8S8)"
    elif machine in X86:
        device, fast, why = "cpu-x86", "uint8", "x86 CPUs multiply uint8 activations by int8 weights (U8S8)"
    else:
        device, fast, why = "cpu-arm", "int8", f"{machine} CPUs run int8 activations (S8S8)"
    activation = fast if activation_type == "auto" else activation_type
    if activation_type != "auto":
        why = f"--activation-type {activation_type}" + ("" if activation == fast else f" (the fast path here is {fast})")
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    reduce_range = device == "cpu-x86" and activation == "uint8" and flags and not vnni
    if reduce_range:
        why += "; no VNNI on this CPU, so 7-bit weights avoid saturating 16-bit sums"
    return Target(device, activation, bool(reduce_range), why)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where unknown, which keeps full 8-bit weights."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
