"""Validation on onnxruntime: quality on data, interleaved latency, static counts, gates. Never imports torch.

``onnxkd.validate`` is both this package and the public function ``validate``: importing any
submodule rebinds ``onnxkd.validate`` to the package, so the package itself is callable too.
"""

from onnxkd._callable_package import make_callable

make_callable(__name__, "onnxkd.validate.api:validate")
