"""Static int8 quantization (QDQ) on onnxruntime.quantization, kept only where it is measured faster and within
an accuracy budget. Uses onnxruntime, never torch (QAD, the torch side, lives in distill)."""

from onnxkd.quantize.api import quantize
from onnxkd.quantize.result import QuantizeResult

__all__ = ["quantize", "QuantizeResult"]
