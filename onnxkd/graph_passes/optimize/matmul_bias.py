"""A linear layer on a 3-D (or higher) input, MatMul(x, W) + b -> Reshape, Gemm, Reshape.

Exporters write ``nn.Linear`` on [batch, tokens, features] as MatMul and a bias Add. onnxruntime's CPU
optimizer fuses MatMul + Add into Gemm only for 2-D inputs, so every transformer layer runs its bias Adds
as separate kernels (Adds, bias and residual, took 22% of a small BERT's kernel time). Gemm adds the bias
inside the matrix product, and the two Reshapes around it are views. Measured on the zoo transformers
(pruned, one thread): 1.03-1.04x at batch 1, 1.09-1.12x at batch 8.

Matched only where the output shape can be written without reading x's shape at run time: at most one
leading dim unknown (it becomes -1). W is a 2-D constant and b a constant of W's output width, both of x's
float type. Not matched where the sum goes into a GELU: onnxruntime fuses that bias Add into the GELU itself
(BiasGelu), which a Gemm would take away (ConvNeXt-like blocks, whose first MLP layer feeds a GELU, ran
0.86-0.98x with it rewritten).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from onnxkd.graph_passes.optimize.fusion import FLOATS, Fusion


class LinearOnBatches(pattern.RewriteRuleClassBase):
    """Add(MatMul(x, W), b) with x of rank >= 3."""

    def pattern(self, op, x, w, b):
        return op.Add(op.MatMul(x, w, _outputs=["product"]), b, _outputs=["biased"])

    def check(self, op, x, w, b, biased, **_):
        if _feeds_gelu(biased):
            return False
        weight, bias = ir.convenience.get_const_tensor(w), ir.convenience.get_const_tensor(b)
        if weight is None or bias is None or len(weight.shape) != 2 or tuple(bias.shape) != (weight.shape[1],):
            return False
        if not (x.dtype == weight.dtype == bias.dtype and weight.dtype in FLOATS):
            return False
        dims = list(x.shape) if x.shape is not None else []
        if len(dims) < 3 or dims[-1] != weight.shape[0]:  # rank 2: onnxruntime makes it a Gemm itself
            return False
        return sum(not isinstance(d, int) for d in dims[:-1]) <= 1

    def rewrite(self, op, x, w, b, product, **_):
        rows, width = ir.convenience.get_const_tensor(w).shape
        leading = [d if isinstance(d, int) else -1 for d in list(x.shape)[:-1]]
        # initializers, not Constant nodes: the graph does not grow by two nodes per layer; named after the
        # replaced MatMul's output, which no other match shares
        flat_shape = op.initializer(_ints([-1, rows], f"{product.name}_rows"))
        out_shape = op.initializer(_ints(leading + [width], f"{product.name}_shape"))
        return op.Reshape(op.Gemm(op.Reshape(x, flat_shape), w, b), out_shape)


# a GELU as one op, or written out (x * 0.5 * (1 + erf(x / sqrt(2)))): the sum reaches Erf through one Div or Mul
GELU_OPS = frozenset({"Gelu", "FastGelu", "BiasGelu"})


def _feeds_gelu(value: ir.Value) -> bool:
    """Whether onnxruntime can fuse the bias Add producing ``value`` into a GELU after it."""
    for use in value.uses():
        if use.node.op_type in GELU_OPS:
            return True
        if any(next_use.node.op_type == "Erf" for out in use.node.outputs for next_use in out.uses()):
            return True
    return False


def _ints(values: list[int], name: str) -> ir.Tensor:
    return ir.tensor(np.array(values, dtype=np.int64), name=name)


# Constants are second in every Add (fusion.constants_second), so one operand order is enough.
MATMUL_BIAS = Fusion("Gemm (MatMul + bias)", min_opset=7,
                     rules=lambda: pattern.RewriteRuleSet([LinearOnBatches.rule()]),
                     anchors=frozenset({"MatMul"}))
