"""A package that can be called like the function it is named after.

``onnxkd.distill`` and ``onnxkd.validate`` are both a function of the public API and a subpackage.
Python binds ``onnxkd.<name>`` to the subpackage as soon as anything imports it (``import
onnxkd.distill.losses``), which would shadow the function; calling the package calls the function
instead, so ``onnxkd.distill(...)`` works whatever was imported first. The function's module is
imported on the first call, so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(package_name: str, target: str) -> None:
    """Calling ``sys.modules[package_name]`` calls ``target`` ("module:function")."""
    module_name, function_name = target.split(":")

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(module_name), function_name)(*args, **kwargs)

    sys.modules[package_name].__class__ = CallablePackage
