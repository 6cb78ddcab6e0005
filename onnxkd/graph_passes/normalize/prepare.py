"""The form the dependency analysis reads: normalised, every constant an initializer, untied, named."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass, ShapeInferencePass

from onnxkd.graph_passes.normalize.broadcast_views import BroadcastViewsPass
from onnxkd.graph_passes.normalize.expand_sizes import ExpandSizeGuardsPass
from onnxkd.graph_passes.normalize.explicit_split import ExplicitSplitSizesPass
from onnxkd.graph_passes.normalize.fold_views import FoldConstantViewsPass
from onnxkd.graph_passes.normalize.packed_selects import PackedSelectsToSlicesPass
from onnxkd.graph_passes.normalize.static_slice_bounds import FoldStaticSliceBoundsPass
from onnxkd.graph_passes.normalize.strided_gathers import StridedGathersPass
from onnxkd.graph_passes.normalize.untie import NameNodesPass, UntieInitializersPass, UntieShapeConcatsPass
from onnxkd.graph_passes.normalize.zero_states import DropZeroInitialStatesPass
from onnxkd.model import ModelLike


def prepare(model: ModelLike, *, simplify: bool = False) -> ir.Model:
    """A new model (the caller's is untouched) numerically equal to ``model``, ready for analysis."""
    from onnxkd.graph_passes.normalize.canonical import normalize

    prepared = normalize(model, simplify=simplify)
    steps = (LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0), DropZeroInitialStatesPass(),
             ExpandSizeGuardsPass(), RemoveUnusedNodesPass(), FoldConstantViewsPass(),
             PackedSelectsToSlicesPass(), StridedGathersPass(), BroadcastViewsPass(), UntieShapeConcatsPass(),
             UntieInitializersPass(), NameNodesPass(), ExplicitSplitSizesPass(), FoldStaticSliceBoundsPass())
    for step in steps:
        prepared = step(prepared).model
    try:
        prepared = ShapeInferencePass(strict_mode=False)(prepared).model
    except Exception:  # shapes already inferred by normalize; a failure here only loses new copies' shapes
        pass
    return prepared
