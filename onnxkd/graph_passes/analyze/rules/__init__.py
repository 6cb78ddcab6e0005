"""How channel layouts move through each ONNX op, one op family per module; importing this package registers
them all in ``registry.RULES`` (what ``dependency.analyze`` dispatches on). To add a family, create a module
here that registers with ``registry.rule`` and add its name to FAMILIES."""

import importlib

FAMILIES = ["linear", "elementwise", "norm", "reshape", "slicing", "recurrent", "einsum"]

for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
