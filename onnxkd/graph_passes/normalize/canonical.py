"""Normalisation, the first step of every command: one canonical form of the model for later stages.

After it, weights are initializers (folded from Constant/ConstantOfShape, never graph inputs, shared
ones still shared), Identity nodes are gone, the opset is at least 13 where onnx's converter can get
there, and value shapes are inferred. Graph input/output names and dynamic dims are unchanged, and the
model computes the same function. The caller's model (file, proto or ir.Model) is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes.common import (
    IdentityEliminationPass,
    RemoveInitializersFromInputsPass,
    RemoveUnusedNodesPass,
    ShapeInferencePass,
    TopologicalSortPass,
)

from onnxkd.graph_passes.normalize import (
    FoldConstantOfShapePass,
    LiftWeightConstantsPass,
    SimplifyPass,
    UpgradeOpsetPass,
)
from onnxkd.graph_passes.normalize.signature import RestoreSignaturePass, signature
from onnxkd.model import ModelLike, load, opset_of


@dataclass
class NormalizeReport:
    """What normalisation did (plain data, serialisable to report.json)."""

    passes: list[str] = field(default_factory=list)  # passes that changed the model, in order
    simplifier: str = "none"  # "onnxsim", "onnxscript" (fallback folding) or "none"
    simplifier_note: str | None = None  # why onnxsim was not used; None when it was
    opset_before: int = 0
    opset_after: int = 0
    opset_note: str | None = None  # why the opset stayed below 13; None otherwise
    lifted_constants: int = 0  # Constant nodes turned into initializers
    folded_constant_of_shape: int = 0  # ConstantOfShape nodes turned into initializers
    nodes_before: int = 0
    nodes_after: int = 0

    @property
    def removed_nodes(self) -> int:
        return self.nodes_before - self.nodes_after


def normalize(model: ModelLike, *, simplify: bool = True, timeout_s: float = 300.0) -> ir.Model:
    """The normalised copy of ``model`` (see the module docstring); ``normalize_with_report`` says what changed."""
    return normalize_with_report(model, simplify=simplify, timeout_s=timeout_s)[0]


def normalize_with_report(
    model: ModelLike, *, simplify: bool = True, timeout_s: float = 300.0
) -> tuple[ir.Model, NormalizeReport]:
    """Normalise and report. ``simplify=False`` skips onnxsim (onnxscript still folds constants);
    ``timeout_s`` bounds the onnxsim run, after which the fallback folder takes over."""
    source = load(model)
    report = NormalizeReport(nodes_before=_node_count(source))
    upgrade = UpgradeOpsetPass()
    simplifier = SimplifyPass(use_onnxsim=simplify, timeout_s=timeout_s)
    lift = LiftWeightConstantsPass()
    fill = FoldConstantOfShapePass()
    passes: list[ir.passes.PassBase] = [
        upgrade,  # first: it copies the model, so nothing below touches the caller's
        RemoveInitializersFromInputsPass(),  # an initializer that is also an input is not a constant
        fill,  # old exporters' weights
        IdentityEliminationPass(),  # before folding, which would copy Identity-shared weights apart
        simplifier,
        IdentityEliminationPass(),
        lift,
        RemoveUnusedNodesPass(),
        TopologicalSortPass(),
        ShapeInferencePass(),
        RestoreSignaturePass(signature(source)),
    ]
    current = source
    for step in passes:
        result = step(current)
        if result.modified:
            report.passes.append(type(step).__name__)
        current = result.model
    report.simplifier, report.simplifier_note = simplifier.used, simplifier.note
    report.opset_before, report.opset_after, report.opset_note = upgrade.opset_before, opset_of(current), upgrade.note
    report.lifted_constants, report.folded_constant_of_shape = lift.lifted, fill.folded
    report.nodes_after = _node_count(current)
    return current, report


def _node_count(model: ir.Model) -> int:
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
