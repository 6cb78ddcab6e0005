"""Post-training static quantization with onnxruntime.quantization: QDQ, per-channel int8 weights.

A ``Quantizer`` quantizes one prepared float model many times, each time with other nodes left in float (the
speed and accuracy searches), and calibrates once: onnxruntime's calibration cache holds the ranges of every
tensor of the first, fully quantized run, a superset of what later runs need.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxkd.data import Dataset
from onnxkd.errors import OnnxkdError
from onnxkd.quantize.calibration import DEFAULT_METHOD, METHODS, reader_for
from onnxkd.quantize.channel_pad import padded_copy
from onnxkd.quantize.target import Target
from onnxkd.validate.sessions import first_line

# Batches calibrated at a time. onnxruntime's histogram calibrators otherwise hold every tensor of every batch in
# memory before making the first histogram; per batch, they extend the histogram at its bin width as larger
# values come. Quantizing MobileNetV2 1.0 at 224x224 took 30-32 s instead of 67 s (128 calibration samples, 2
# cores), the zoo ResNet at 128x128 13 s instead of 17 s, with the same accuracy.
CALIBRATION_STRIDE = 1

# ops whose inputs onnxruntime quantizes with weights: their MACs are the reason int8 pays
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# What is quantized. "all": every op onnxruntime can quantize (its default): a CNN then runs in int8 from one
# convolution to the next, through its residual Adds, pools and Concats. "weighted": only the compute ops, with the
# activations onnxruntime folds into them; every other tensor stays float. A transformer's residual stream (the
# Adds between its LayerNorms) carries values 8 bits cannot hold together with the small ones: BERT-small (4 x 512,
# 64 tokens) trained on benchmarks/int8_text.py's task lost 3.9 held-out points with every op quantized and 0.1
# with only its MatMuls, which also ran faster (2.08x against 1.91x the float model's speed at batch 8). The
# search tries "all" first and "weighted" where "all" does not pay or loses more than the budget.
SCOPES = ("all", "weighted")
WEIGHTED_OPS = (*COMPUTE_OPS, "Relu", "Clip")


@dataclass(frozen=True)
class Settings:
    target: Target
    method: str = DEFAULT_METHOD
    per_channel: bool = True
    percentile: float = 99.999

    def to_dict(self) -> dict:
        return {"method": self.method, "per_channel": self.per_channel, "format": "QDQ",
                **({"percentile": self.percentile} if self.method == "percentile" else {})}


class Quantizer:
    def __init__(self, float_path: Path, graph: onnx.GraphProto, folder: Path, calibration: Dataset,
                 settings: Settings, batch: int, large: bool = False):
        if settings.method not in METHODS:
            raise OnnxkdError(f"--calibration {settings.method!r}: choose from {', '.join(METHODS)}")
        self.float_path, self.graph, self.folder, self.settings, self.large = float_path, graph, folder, settings, large
        self.calibration, self.batch = calibration, batch
        self.cache = folder / "calibration.json"
        self.runs = 0
        self.method = settings.method  # what calibration used (minmax where a histogram cannot be made)
        self.infinite: set[str] = set()  # nodes on tensors whose range is infinite: always left float
        self.decoding: set[str] = set()  # nodes decoding an output of boxes and scores: always left float
        self.notes: list[str] = []
        self.pad_channels = False  # pad narrow convolution inputs (channel_pad.py) in every model written
        self.scope = SCOPES[0]  # what every model written from now on quantizes (SCOPES)

    def use_scope(self, scope: str) -> None:
        self.scope = scope

    def padded(self, path: Path) -> tuple[Path, list[str]] | None:
        """A copy of the written model ``path`` with its narrow convolution inputs padded and their names; None
        when it has none."""
        return padded_copy(path, path.with_name(f"{path.stem}-padded.onnx"))

    def __call__(self, exclude: Collection[str] = ()) -> Path:
        """The QDQ model with the nodes in ``exclude`` (names) left in float, written into the work folder."""
        self.runs += 1
        out = self.folder / f"int8-{self.runs}.onnx"
        exclude = set(exclude) | self.infinite | self.decoding
        try:
            self._quantize(out, exclude, self.method)
        except NonFiniteRange:
            # An attention mask's -inf cannot go into a histogram; MinMax ranges take it (onnxruntime's default).
            self.notes.append(f"{self.method} calibration cannot take tensors holding infinities (an attention "
                              "mask's -inf): calibrated with minmax instead")
            self.method = "minmax"
            self._quantize(out, exclude, self.method)
        if self.runs == 1 and (infinite := self._nodes_on_infinite_tensors()):
            # int8 cannot hold -inf: the mask would come out as garbage, so what reads or writes it stays float
            self.infinite = infinite
            self.notes.append(f"{len(infinite)} node(s) reading or writing infinite values (an attention mask) "
                              "stay float")
            self._quantize(out, exclude | infinite, self.method)
        if self.pad_channels:
            padded_copy(out, out)
        return out

    def keep_decoding_float(self) -> None:
        """Leave float the nodes that compute an output of values of different kinds from the last learned layers
        (``output_parts.decoding_nodes``: a detector's Sigmoid, DFL softmax and expectation, anchors, strides and
        Concats), as ultralytics' int8 exports with NNCF leave them. Quantized, the Concat gets one 8-bit range
        for coordinates in pixels and scores from 0 to 1: a step of about 2.5 pixels on a 640-pixel image, which
        rounds every score to 0. Measured on a YOLOv8-style head at 128x160, batch 8: the DFL softmax in int8
        too (over 16 bins, 1/255 a step) ran 9% faster but moved boxes by 0.39 pixels on average and up to 6.3
        (0.012 and 0.17 with it float), since onnxruntime's float Softmax over an axis that is not the last
        is slow (1.7 ms of 10)."""
        from onnxkd.graph_passes.analyze.output_parts import decoding_nodes

        decoding = decoding_nodes(ir.from_proto(onnx.load(str(self.float_path), load_external_data=False)))
        if decoding:
            self.decoding = set(decoding)
            outputs = ", ".join(sorted(set(decoding.values())))
            self.notes.append(f"{len(decoding)} node(s) decoding output(s) {outputs} (box coordinates and scores in "
                              "one tensor, which one 8-bit range cannot hold) stay float")

    def _nodes_on_infinite_tensors(self) -> set[str]:
        ranges = json.loads(self.cache.read_text()).get("data", {}) if self.cache.exists() else {}
        infinite = {name for name, value in ranges.items() if re.search(r"inf|nan", json.dumps(value), re.I)}
        return {node.name for node in self.graph.node if infinite & (set(node.input) | set(node.output))}

    def _quantize(self, out: Path, exclude: Collection[str], method_name: str) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantType, quantize_static

        quant_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[self.settings.target.activation]
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[method_name]
        extra = {"ActivationSymmetric": self.settings.target.activation == "int8", "WeightSymmetric": True,
                 "CalibPercentile": self.settings.percentile, "CalibStridedMinMax": CALIBRATION_STRIDE}
        root = logging.getLogger()  # onnxruntime's calibrators log to it; the caller's level comes back below
        level = root.level
        root.setLevel(logging.ERROR)
        try:  # the histogram calibrators print() their progress: it would break --json on stdout; an infinite
            # range (dropped right after) warns from numpy
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                reader = reader_for(self.float_path, self.calibration, self.batch)
                quantize_static(str(self.float_path), str(out), reader,
                                per_channel=self.settings.per_channel, reduce_range=self.settings.target.reduce_range,
                                activation_type=quant_type, weight_type=QuantType.QInt8, calibrate_method=method,
                                nodes_to_exclude=sorted(exclude), extra_options=extra,
                                op_types_to_quantize=list(WEIGHTED_OPS) if self.scope == "weighted" else None,
                                use_external_data_format=self.large, calibration_cache_path=str(self.cache))
        except OnnxkdError:
            raise
        except Exception as exc:  # a batch of the wrong shape surfaces in the calibration run
            first = first_line(exc)
            if method_name != "minmax" and "not finite" in first:
                raise NonFiniteRange(first) from None
            raise OnnxkdError(f"calibration failed: {first}") from None
        finally:
            root.setLevel(level)


class NonFiniteRange(Exception):
    """A histogram calibrator met a tensor with infinite values."""


def quantized_nodes(path: Path) -> list[str]:
    """Names of the compute nodes (Conv, Gemm, MatMul) that run on dequantized int8 weights in a QDQ model."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in graph.node
            if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] in dequantized]


def compute_nodes(graph: onnx.GraphProto) -> dict[str, str]:
    """Compute nodes of a float model: name -> op type (what quantization can make int8)."""
    return {node.name: node.op_type for node in graph.node if node.op_type in COMPUTE_OPS}
