"""Tiny ONNX classifiers built with onnx.helper (no torch), with their numpy forward passes as oracles."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE = (3, 8, 8)
CLASSES = 10


def classifier(c1: int, c2: int, seed: int = 0, batch: int | str = "N", name: str = "net") -> tuple[onnx.ModelProto, dict]:
    """Conv(3->c1,3x3,pad 1)+Relu, Conv(c1->c2,3x3,stride 2,pad 1)+Relu, GlobalAveragePool, Flatten, Gemm(c2->10).

    The student is the teacher with the first c1/c2 channels kept, so their outputs are related.
    """
    rng = np.random.default_rng(seed)
    w = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32)[:c1] * 0.5,
        "b1": rng.standard_normal(8).astype(np.float32)[:c1] * 0.1,
        "w2": rng.standard_normal((16, 8, 3, 3)).astype(np.float32)[:c2, :c1] * 0.3,
        "b2": rng.standard_normal(16).astype(np.float32)[:c2] * 0.1,
        "wf": rng.standard_normal((CLASSES, 16)).astype(np.float32)[:, :c2],
        "bf": rng.standard_normal(CLASSES).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, w


def forward(w: dict, x: np.ndarray) -> np.ndarray:
    """The numpy oracle of `classifier`."""
    h = np.maximum(conv2d(x, w["w1"], w["b1"], stride=1), 0)
    h = np.maximum(conv2d(h, w["w2"], w["b2"], stride=2), 0)
    return h.mean(axis=(2, 3)) @ w["wf"].T + w["bf"]


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    n, cin, h, wd = x.shape
    cout, _, k, _ = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h + 2 - k) // stride + 1, (wd + 2 - k) // stride + 1
    out = np.empty((n, cout, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, weight)
    return out + bias[None, :, None, None]
