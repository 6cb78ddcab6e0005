"""``optimize``: clean up, then apply each fusion, upgrading the opset first when a fused op needs it.

Not fused, by measurement (onnxruntime 1.32, CPU): SiLU (x * sigmoid(x)) is fused by onnxruntime itself
into its QuickGelu kernel, while an ONNX Swish op (opset 24) has no kernel and runs 4x slower expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from onnxkd.graph_passes.normalize.opset import UpgradeOpsetPass
from onnxkd.graph_passes.optimize.cleanup import clean_up
from onnxkd.graph_passes.optimize.fusion import Fusion, inferred_types_filled
from onnxkd.graph_passes.optimize.gelu import GELU
from onnxkd.graph_passes.optimize.global_pool import GLOBAL_POOL
from onnxkd.graph_passes.optimize.hard_activations import HARD_ACTIVATIONS
from onnxkd.graph_passes.optimize.layer_norm import LAYER_NORM
from onnxkd.graph_passes.optimize.matmul_bias import MATMUL_BIAS
from onnxkd.graph_passes.optimize.mish import MISH
from onnxkd.graph_passes.optimize.static_shapes import fold_static_shapes
from onnxkd.model import ModelLike, graph_copy, load, opset_of

FUSIONS: tuple[Fusion, ...] = (HARD_ACTIVATIONS, GELU, MISH, LAYER_NORM, MATMUL_BIAS, GLOBAL_POOL)
STATIC_RESHAPE = "Reshape targets made static"  # how ``fused`` counts the folded targets (static_shapes.py)
# Weights also listed as graph inputs (IR < 4 files, torch's keep_initializers_as_inputs=True) may be fed at
# run time, so onnxruntime folds none of them (no BatchNorm into its Conv): 1.9x slower on a small CNN.
WEIGHT_INPUTS = "weights listed as inputs made constants"


@dataclass
class OptimizeResult:
    model: ir.Model = field(repr=False)  # the repr shows what changed, not the graph
    fused: dict[str, int]  # fusion name -> patterns rewritten (0 for fusions that found nothing)
    nodes_before: int
    nodes_after: int
    initializers_removed: int
    opset_before: int
    opset_after: int
    notes: list[str] = field(default_factory=list)  # fusions skipped, and why

    @property
    def summary(self) -> dict:
        return {"fused": self.fused, "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "initializers_removed": self.initializers_removed, "opset_before": self.opset_before,
                "opset_after": self.opset_after, "notes": self.notes}

    def to_dict(self) -> dict:
        """JSON-ready, as every other result's (``onnxkd optimize --json`` prints the summary)."""
        return self.summary


def optimize(model: ModelLike, fusions: tuple[Fusion, ...] = FUSIONS) -> OptimizeResult:
    """A deploy-ready copy of ``model``: same inputs and outputs (names, dims), same function; weights the
    file also lists as inputs are constants (no longer inputs).

    The caller's model is not modified. A fusion whose op needs a higher opset than the model's is
    applied after onnx's version converter upgrades the model; if the converter fails, that fusion
    is skipped and ``notes`` says so.
    """
    source = load(model)
    nodes_before, initializers_before = _count(source)
    opset_before = opset_of(source)
    work = graph_copy(source)
    weight_inputs = _weights_not_inputs(work)
    clean_up(work)
    reshapes = fold_static_shapes(work)
    with inferred_types_filled(work):  # the fusions below see these types too: decide the upgrade as they will
        needed = _opset_needed(work, fusions)
    notes: list[str] = []
    if needed > opset_of(work):
        upgrade = UpgradeOpsetPass(needed)
        upgraded = upgrade(work).model
        if upgrade.note is None:
            work = upgraded
        else:
            notes.append(upgrade.note)  # "kept opset N: version converter failed (...)"
    fused = {}
    with inferred_types_filled(work):
        for fusion in fusions:
            if fusion.min_opset > opset_of(work):
                fused[fusion.name] = 0
                if _matches(work, fusion):
                    notes.append(f"{fusion.name}: not fused, needs opset {fusion.min_opset} (model has {opset_of(work)})")
                continue
            fused[fusion.name] = fusion.apply(work)
    fused[STATIC_RESHAPE] = reshapes
    fused[WEIGHT_INPUTS] = weight_inputs
    clean_up(work)
    _keep_interface(source, work)
    nodes_after, initializers_after = _count(work)
    return OptimizeResult(work, fused, nodes_before, nodes_after, max(0, initializers_before - initializers_after),
                          opset_before, opset_of(work), notes)


def _weights_not_inputs(model: ir.Model) -> int:
    """Drop the graph inputs that are initializers (the rest of the interface stays); how many."""
    listed = [value for value in model.graph.inputs if value.name in model.graph.initializers]
    for value in listed:
        model.graph.inputs.remove(value)
    if listed:
        model.ir_version = max(model.ir_version or 0, 4)  # IR 3 wants every initializer listed as an input
    return len(listed)


def _keep_interface(source: ir.Model, work: ir.Model) -> None:
    """Give the graph inputs and outputs the source's types and shapes back: the version converter's shape
    inference writes the numbers it infers over named dims (``MatMul_output_dim_1`` -> 12)."""
    declared = {v.name: v for v in (*source.graph.inputs, *source.graph.outputs)}
    for value in (*work.graph.inputs, *work.graph.outputs):
        kept = declared.get(value.name)
        if kept is not None:
            value.type = kept.type
            value.shape = kept.shape.copy() if kept.shape is not None else None


def _opset_needed(model: ir.Model, fusions: tuple[Fusion, ...]) -> int:
    """The highest opset among the fusions that would rewrite something (the model's own if none)."""
    needed = opset_of(model)
    for fusion in fusions:
        if fusion.min_opset > needed and _matches(model, fusion):
            needed = fusion.min_opset
    return needed


def _matches(model: ir.Model, fusion: Fusion) -> bool:
    return fusion.apply(graph_copy(model)) > 0


def _count(model: ir.Model) -> tuple[int, int]:
    return sum(1 for _ in model.graph.all_nodes()), len(model.graph.initializers)
