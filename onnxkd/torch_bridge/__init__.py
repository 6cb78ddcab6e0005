"""ONNX <-> torch: ``to_torch`` turns a graph into a trainable module, ``write_back`` returns its weights."""

from onnxkd.torch_bridge.module import OnnxModule, to_torch
from onnxkd.torch_bridge.write_back import write_back

__all__ = ["OnnxModule", "to_torch", "write_back"]
