"""Static int8 quantization (QDQ) on onnxruntime.quantization, kept only where it is measured faster and within
an accuracy budget. Uses onnxruntime, never torch (QAD, the torch side, lives in distill).

``onnxkd.quantize`` is both this package and the public function ``quantize``: importing any submodule rebinds
``onnxkd.quantize`` to the package, so the package itself is callable too.
"""

from onnxkd._callable_package import make_callable

make_callable(__name__, "onnxkd.quantize.api:quantize")
