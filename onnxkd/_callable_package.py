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

        def __getattr__(self, name: str):  # a submodule on first use (onnxkd.distill.importance.kd_scores)
            return submodule(package_name, name)

    sys.modules[package_name].__class__ = CallablePackage


def submodule(package_name: str, name: str) -> types.ModuleType:
    """``package_name.name`` imported, for attribute access before any ``import`` of it; AttributeError if there is
    no such module."""
    full = f"{package_name}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        raise AttributeError(f"module {package_name!r} has no attribute {name!r}") from None
