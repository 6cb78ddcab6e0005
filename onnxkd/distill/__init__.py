"""Knowledge distillation: the pruned student learns from its unpruned teacher in PyTorch, then goes back
to ONNX. ``onnxkd.distill`` is both this package and the public function (the package is callable)."""

from onnxkd._callable_package import make_callable

make_callable(__name__, "onnxkd.distill.api:distill")
