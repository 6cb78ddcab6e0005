"""Deploy-ready graphs: exporter-written activations fused back into single ops, dead weight dropped.

``optimize(model) -> OptimizeResult``. Each fusion is one small module with its rules; the list of
fusions is data (``FUSIONS``), applied in order. Torch-free, like the rest of graph_passes.
"""

from onnxkd.graph_passes.optimize.api import FUSIONS, OptimizeResult, optimize

__all__ = ["FUSIONS", "OptimizeResult", "optimize"]
