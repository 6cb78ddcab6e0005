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
    return list(dict.fromkeys([t for o in outputs if o not in shaped.outputs for t in _in_place_of(o, scores, decoded)]
                              + [t for t in shaped.sources if t not in outputs]))


def _in_place_of(output: str, scores: dict[str, str], decoded: dict) -> list[str]:
    if output in decoded:
        return [*decoded[output].heads, *(tensor for tensor, _, _ in decoded[output].probabilities)]
    return [scores.get(output, output)]
