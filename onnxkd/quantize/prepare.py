"""The float model onnxruntime.quantization works best on: opset >= 13, spatial means as pools, shapes
inferred, BatchNorm folded.

DequantizeLinear's ``axis`` (per-channel weights) needs opset 13: quantizing PaddlePaddle's opset-11/12 graphs
as they are writes models onnxruntime rejects. onnxruntime's ``quant_pre_process`` then infers shapes (symbolic,
so dynamic height/width stay dynamic) and runs its basic graph optimisations, which fold BatchNorm into the
convolutions before them: one int8 Conv instead of a Conv and a float BatchNorm. A mean over the feature
map's height and width (``x.mean((2, 3))``, and the dynamo exporter's adaptive pooling) becomes the
GlobalAveragePool it is: onnxruntime has an int8 kernel for that, none for ReduceMean, and the int8 model
would dequantize the whole last feature map to average it in float.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import onnx_ir as ir

from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.analyze.quantized import refuse_quantized
from onnxkd.model import opset_of, remove, save
from onnxkd.validate.sessions import first_line

QUANTIZE_OPSET = 13
# QuantizeLinear/DequantizeLinear appeared in opset 10: older graphs come from exporters too old to trust here
MIN_OPSET = 10
# above this, models and onnxruntime's temp files keep their weights in external data (protobuf's 2 GB limit)
LARGE_BYTES = 1 << 30


def check_quantizable(model: ir.Model, label: str = "model") -> None:
    """Refuse models that are already quantized, or older than opset 10, with one line."""
    refuse_quantized(model, label, "give its float original")
    opset = opset_of(model)
    if opset < MIN_OPSET:
        raise OnnxkdError(f"{label} has opset {opset}: int8 quantization needs opset >= {MIN_OPSET} "
                          f"(re-export it at opset {QUANTIZE_OPSET} or later)")


@contextmanager
def _working_in(folder: Path):
    """Run with ``folder`` as the current directory. Where onnxruntime's symbolic shape inference cannot infer every
    shape (a YOLO head's anchor grid), it saves its partial model into the current directory, as
    sym_shape_infer_temp.onnx and a .data file named by a uuid, and leaves them there: in the user's folder,
    7 MB a run for a small detector. The work folder goes away with the run."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def prepare_float(model: ir.Model, folder: Path) -> tuple[Path, dict]:
    """Write the model ready for ``quantize_static`` into ``folder``: (its path, what was done)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxkd.graph_passes.normalize.opset import UpgradeOpsetPass
    from onnxkd.graph_passes.optimize.fusion import inferred_types_filled
    from onnxkd.graph_passes.optimize.global_pool import GLOBAL_POOL

    upgrade = UpgradeOpsetPass(QUANTIZE_OPSET)
    upgraded = upgrade(model).model  # a copy, even when nothing was upgraded
    if upgrade.opset_after < QUANTIZE_OPSET:
        raise OnnxkdError(f"opset {upgrade.opset_before}: per-channel int8 needs opset {QUANTIZE_OPSET}, and "
                          f"onnx's version converter could not upgrade it ({upgrade.note})")
    pooled = 0
    if GLOBAL_POOL.may_match(upgraded):  # onnx's shape inference is not free on a large model: only when needed
        with inferred_types_filled(upgraded):
            pooled = GLOBAL_POOL.apply(upgraded)
    large = model_bytes(upgraded) > LARGE_BYTES
    raw = save(upgraded, folder / "float-upgraded.onnx", external_data=large)
    prepared = folder / "float.onnx"
    with _quiet_preprocessing(), _working_in(folder):
        try:
            quant_pre_process(str(raw), str(prepared), save_as_external_data=large)
        except Exception as exc:  # symbolic shape inference fails on some custom ops: onnx's inference is enough
            try:
                quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True, save_as_external_data=large)
            except Exception:
                raise OnnxkdError("onnxruntime cannot prepare the model for quantization "
                                  f"({first_line(exc)})") from None
    remove(raw)  # a whole copy of the weights on disk for the rest of the run (2.4 GB on a 2.4 GB model)
    return prepared, {"opset_before": upgrade.opset_before, "opset_after": upgrade.opset_after,
                      "batchnorm_folded": _count(model, "BatchNormalization") - _count_path(prepared, "BatchNormalization"),
                      "spatial_means_pooled": pooled}


@contextmanager
def _quiet_preprocessing():
    """quant_pre_process logs each step to the root logger, and the onnxruntime session it optimizes with warns on
    stderr about every initializer the graph no longer uses: neither is the user's business."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)  # onnxruntime's default (it offers no getter)


def model_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def _count(model: ir.Model, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.all_nodes())


def _count_path(path: Path, op_type: str) -> int:
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
