"""The tensors a pruned or distilled model is held to, read off the graph before any data runs.

Each output, or the class scores behind it (``classifier_heads``: the logits behind a Softmax, a class id or a
confidence); in place of outputs whose shape follows their data (``data_shaped``: a detector's
NonMaxSuppression), the per-sample tensors they come from. Importance scores (kd, taylor) differentiate these.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxkd.graph_passes.analyze.classifier_heads import scores_behind
from onnxkd.graph_passes.analyze.data_shaped import data_shaped


def compared_tensors(model: ir.Model) -> list[str]:
    """Tensor names in order, without repeats (a class id and its confidence share their logits)."""
    shaped, scores = data_shaped(model), scores_behind(model)
    outputs = [value.name for value in model.graph.outputs]
    return list(dict.fromkeys([scores.get(o, o) for o in outputs if o not in shaped.outputs]
                              + [t for t in shaped.sources if t not in outputs]))
