"""The tensors a pruned or distilled model is held to, read off the graph before any data runs.

Each output, or the class scores behind it (``classifier_heads``: the logits behind a Softmax, a class id or a
confidence); in place of outputs whose shape follows their data (``data_shaped``: a detector's
NonMaxSuppression), the per-sample tensors they come from; in place of outputs that put box coordinates next to
class probabilities (``output_parts.decodes``: a YOLO-family detector), the head tensors they are decoded
from and the logits their Softmaxes and Sigmoids read. Importance scores (kd, taylor) differentiate these.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxkd.graph_passes.analyze.classifier_heads import scores_behind
from onnxkd.graph_passes.analyze.data_shaped import data_shaped
from onnxkd.graph_passes.analyze.output_parts import decodes


def compared_tensors(model: ir.Model) -> list[str]:
    """Tensor names in order, without repeats (a class id and its confidence share their logits)."""
    shaped, scores, decoded = data_shaped(model), scores_behind(model), decodes(model)
    outputs = [value.name for value in model.graph.outputs]
    in_place_of = {o: decoded[o].tensors if o in decoded else [scores.get(o, o)] for o in outputs}
    return list(dict.fromkeys([t for o in outputs if o not in shaped.outputs for t in in_place_of[o]]
                              + [t for t in shaped.sources if t not in outputs]))
