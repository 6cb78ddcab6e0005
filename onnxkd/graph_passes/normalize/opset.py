"""Upgrade models below opset 13 with onnx's version converter, keeping the original where it fails.

Opset 13 is the floor the later stages are written against (Squeeze/Unsqueeze/Split take their axes as
inputs, Softmax works on one axis). The converter needs a ModelProto; large initializers leave the proto
while it runs (onnx_ir's call_onnx_api) and are put back by name, so external data is never copied.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import version_converter
from onnx_ir.passes.common import _c_api_utils

from onnxkd.model import opset_of

MIN_OPSET = 13


class UpgradeOpsetPass(ir.passes.FunctionalPass):
    """Return a copy at ``target`` opset when the default-domain opset is below it, and at an IR version
    that allows it (4 at least: initializers outside the graph inputs).

    After the call, ``opset_before``, ``opset_after`` and ``note`` (why nothing changed, or None)
    describe what happened.
    """

    def __init__(self, target: int = MIN_OPSET):
        super().__init__()
        self.target = target
        self.opset_before = self.opset_after = 0
        self.note: str | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.opset_before = self.opset_after = opset_of(model)
        self.note = None
        upgraded = None
        if self.opset_before < self.target:
            try:
                upgraded = _convert(model, self.target)
            except Exception as exc:  # the converter raises RuntimeError/ValueError/ConvertError per adapter
                self.note = f"kept opset {self.opset_before}: version converter failed ({_first_line(exc)})"
        result = upgraded if upgraded is not None else model.clone()
        self.opset_after = opset_of(result)
        old_ir = result.ir_version
        # IR 3 requires initializers to be graph inputs too; normalised models have them apart.
        result.ir_version = max(result.ir_version or 0, _min_ir_version(result), 4)
        return ir.passes.PassResult(result, modified=upgraded is not None or result.ir_version != old_ir)


def _convert(model: ir.Model, target: int) -> ir.Model:
    tensors = {name: value.const_value for name, value in model.graph.initializers.items()}
    original_inputs = [value.name for value in model.graph.inputs]
    proto = _c_api_utils.call_onnx_api(lambda p: version_converter.convert_version(p, target), model)
    upgraded = ir.from_proto(proto)
    graph = upgraded.graph
    # call_onnx_api turned initializers into graph inputs (the big ones without data): undo that, and
    # give every initializer back its original tensor (external data keeps pointing at its file).
    for value in list(graph.inputs):
        if value.name in tensors and value.name not in graph.initializers:
            value.const_value = tensors[value.name]
            graph.register_initializer(value)
        if value.name in tensors and value.name not in original_inputs:
            graph.inputs.remove(value)
    for name, value in graph.initializers.items():
        if name in tensors:
            value.const_value = tensors[name]
    return upgraded


def _min_ir_version(model: ir.Model) -> int:
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    return onnx.helper.find_min_ir_version_for(opsets, True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
