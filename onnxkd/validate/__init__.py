"""Validation on onnxruntime: quality on data, interleaved latency, static counts, gates. Never imports torch.

``onnxkd.validate`` is both this package and the public function ``validate``: importing any
submodule rebinds ``onnxkd.validate`` to the package, so the package itself is callable too.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from onnxkd.validate.api import validate

        return validate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
