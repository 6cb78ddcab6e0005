"""Torch implementations of ONNX ops, one family per file; importing this package registers them all.

Each family module registers its ops with ``onnxkd.torch_bridge.registry.register``. To add a family,
create a module here and add its name to FAMILIES.
"""

import importlib

FAMILIES = [
    "elementwise",
    "activation",
    "conv",
    "pool",
    "normalization",
    "linalg",
    "shape",
    "reduction",
    "tensor",
    "logical",
    "controlflow",
    "misc",
    "rnn",
    "strings",
]

for _family in FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as exc:
        # A family not written yet is simply absent; a missing dependency inside one is a bug.
        if exc.name != f"{__name__}.{_family}":
            raise
