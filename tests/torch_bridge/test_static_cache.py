"""The cache of shape-only steps must not hold shapes that depend on the data (repeated calls, same shapes).

The conformance suite calls each module once, so it cannot see a stale cached shape: here every graph is
called three times with same-shaped inputs of different values, against onnxruntime each time.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import onnxkd


def _graph(nodes, initializers=()) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, None)
    graph = helper.make_graph(nodes, "g", [x], [out], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


ONE = helper.make_tensor("one", TensorProto.INT64, [], [1])
ZERO_F = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
GRAPHS = {
    # the case the review found: NonZero -> Shape -> Gather returned 1, 1, 1 instead of 1, 3, 0
    "nonzero": _graph([helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Shape", ["nz"], ["s"]),
                       helper.make_node("Gather", ["s", "one"], ["out"], axis=0)], [ONE]),
    "compress": _graph([helper.make_node("Greater", ["x", "zero"], ["mask"]),
                        helper.make_node("Compress", ["x", "mask"], ["kept"], axis=0),
                        helper.make_node("Shape", ["kept"], ["out"])], [ZERO_F]),
    "unique": _graph([helper.make_node("Unique", ["x"], ["u"], sorted=1), helper.make_node("Size", ["u"], ["out"])]),
    "topk_with_computed_k": _graph([
        helper.make_node("Greater", ["x", "zero"], ["mask"]), helper.make_node("Cast", ["mask"], ["m"], to=7),
        helper.make_node("ReduceSum", ["m"], ["k"], keepdims=1),
        helper.make_node("TopK", ["x", "k"], ["values", "indices"]), helper.make_node("Shape", ["values"], ["out"])],
        [ZERO_F]),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_data_dependent_shapes_are_read_on_every_call(name):
    model = GRAPHS[name]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    module = onnxkd.to_torch(model)
    for values in ([0, 1, 0, 0, 0, 0], [1, 2, 0, 3, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 2]):
        x = np.array(values, np.float32)
        expected = session.run(None, {"x": x})[0]
        got = module(torch.from_numpy(x))[0]
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{name} on {values}")
