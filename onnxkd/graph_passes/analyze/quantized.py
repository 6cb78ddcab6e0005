"""Whether a model is already quantized: its int8 tensors cannot be pruned, distilled or quantized again.

Only its float original can be, which is what the refusal says to give.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxkd.errors import OnnxkdError

QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                           "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul",
                           "QAttention"})

# what to do with a quantized teacher instead: its int8 weights cannot be cut or trained
QUANTIZED_ADVICE = "prune and distil its float original, then quantize the student (onnxkd quantize, or compress --int8)"


def refuse_quantized(model: ir.Model, label: str, advice: str) -> None:
    """One line naming ``label`` and what quantized it, then ``advice``, when the model has quantized ops."""
    quantized = [node for node in model.graph.all_nodes() if node.op_type in QUANTIZED_OPS]
    if quantized:
        raise OnnxkdError(f"{label} is already quantized ({len(quantized)} {quantized[0].op_type} and similar "
                          f"nodes): {advice}")
