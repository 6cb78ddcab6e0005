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


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'onnxkd' has no attribute {name!r}")
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API))
