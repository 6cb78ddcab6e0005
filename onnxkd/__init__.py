"""onnxkd: shrink trained ONNX models by channel pruning + knowledge distillation.

The public API is imported lazily so that ``import onnxkd`` stays fast and never imports torch
(the graph and validation layers do not need it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "OnnxkdError": "onnxkd.errors:OnnxkdError",
    "UnsupportedOpError": "onnxkd.errors:UnsupportedOpError",
    "load": "onnxkd.model:load",
    "save": "onnxkd.model:save",
    "to_torch": "onnxkd.torch_bridge:to_torch",
    "write_back": "onnxkd.torch_bridge:write_back",
    "OnnxModule": "onnxkd.torch_bridge:OnnxModule",
    "validate": "onnxkd.validate.api:validate",
    "prune": "onnxkd.graph_passes.api:prune",
    "optimize": "onnxkd.graph_passes.optimize:optimize",
    "distill": "onnxkd.distill.api:distill",
    "quantize": "onnxkd.quantize.api:quantize",
    "QuantizeResult": "onnxkd.quantize.result:QuantizeResult",
    "compress": "onnxkd.pipeline:compress",
    "CompressResult": "onnxkd.pipeline:CompressResult",
    "Recipe": "onnxkd.recipe:Recipe",
    "DistillConfig": "onnxkd.distill.config:DistillConfig",
    "initializer_gradients": "onnxkd.torch_bridge.gradients:initializer_gradients",
}

__all__ = sorted(_API)


# functions that are also packages (callable: see _callable_package): the package, so that dotted names under it
# work too (onnxkd.distill.iterative.iterative_prune)
_CALLABLE_PACKAGES = {"distill", "validate"}


def __getattr__(name: str):
    if name in _CALLABLE_PACKAGES:
        value = importlib.import_module(f"onnxkd.{name}")
    elif name in _API:
        module_name, attribute = _API[name].split(":")
        value = getattr(importlib.import_module(module_name), attribute)
    else:  # a submodule (onnxkd.report.write_report, onnxkd.pipeline.FLAT_OPTIONS) before any import of it
        from onnxkd._callable_package import submodule

        value = submodule("onnxkd", name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API))
