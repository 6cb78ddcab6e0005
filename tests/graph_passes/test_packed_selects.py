"""Selects from a packed q/k/v projection become slices of it: the same numbers, followable channels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxkd
from onnxkd.graph_passes.normalize.packed_selects import PackedSelectsToSlicesPass


def _packed_model(transpose_perm=(3, 1, 2, 0, 4), select_axis=0) -> onnx.ModelProto:
    """x[S, B, E] @ W[E, 3E] -> Reshape(S, B, 3, E) -> Unsqueeze(0) -> Transpose -> Squeeze -> Gather(i): q, k, v."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "zero"], ["u"]),
        helper.make_node("Transpose", ["u"], ["t"], perm=list(transpose_perm)),
        helper.make_node("Squeeze", ["t", "three"], ["s"]),
    ] + [helper.make_node("Gather", ["s", f"i{i}"], [f"o{i}"], axis=select_axis) for i in range(3)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 12)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([5, 2, 3, 4], np.int64), "shape"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([3], np.int64), "three")]
    inits += [numpy_helper.from_array(np.array(i, np.int64), f"i{i}") for i in range(3)]
    graph = helper.make_graph(nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, 4])],
                              [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None) for i in range(3)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_selects_become_slices_with_the_same_outputs():
    model = _packed_model()
    rewritten = onnxkd.load(model)
    assert PackedSelectsToSlicesPass()(rewritten).modified
    ops = [n.op_type for n in rewritten.graph]
    assert ops.count("Slice") == 3 and "Gather" not in ops and "Reshape" not in ops
    assert [v.name for v in rewritten.graph.outputs] == ["o0", "o1", "o2"]
    x = np.random.default_rng(1).standard_normal((5, 2, 4)).astype(np.float32)
    for got, expected in zip(_run(onnxkd.model.to_proto(rewritten), x), _run(model, x)):
        np.testing.assert_array_equal(got, expected)


def test_a_chain_that_does_not_select_the_packed_axis_is_left_alone():
    for model in (_packed_model(transpose_perm=(1, 3, 2, 0, 4)), _packed_model(select_axis=1)):
        candidate = onnxkd.load(model)
        assert not PackedSelectsToSlicesPass()(candidate).modified
