"""Which outputs have a shape that follows their data, and which tensors they come from: checked against what
onnxruntime returns for two different inputs (the flagged outputs change their row count, the sources do not)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from detector import export_detector, images
from onnx import TensorProto, helper

import onnxkd
from onnxkd.graph_passes.analyze.data_shaped import data_shaped


@pytest.mark.parametrize("post_nms_only", [False, True])
def test_a_detectors_outputs_after_non_max_suppression(tmp_path, post_nms_only):
    path = export_detector(tmp_path / "detector.onnx", post_nms_only=post_nms_only)
    shaped = data_shaped(onnxkd.load(path))
    assert shaped.outputs == {"selected": "NonMaxSuppression", "det_boxes": "NonMaxSuppression"}
    # read by NonMaxSuppression; found whether or not the file records their types (post_nms_only: it does not)
    assert shaped.sources == {"boxes": "NonMaxSuppression", "scores": "NonMaxSuppression"}
    session = ort.InferenceSession(str(export_detector(tmp_path / "all.onnx")))
    a, b = (dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images(4, seed=s)})))
            for s in (0, 1))
    assert len(a["selected"]) != len(b["selected"]) and len(a["det_boxes"]) != len(b["det_boxes"])
    assert a["boxes"].shape == b["boxes"].shape and a["scores"].shape == b["scores"].shape


def test_non_zero_makes_its_readers_data_shaped_and_a_constant_is_no_source():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["where"]),
             helper.make_node("Transpose", ["where"], ["coords"]),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [2], [0, 1])),
             helper.make_node("NonZero", ["c"], ["fixed"]), helper.make_node("Neg", ["x"], ["plain"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               [("coords", TensorProto.INT64), ("fixed", TensorProto.INT64), ("plain", TensorProto.FLOAT)]])
    shaped = data_shaped(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert shaped.outputs == {"coords": "NonZero", "fixed": "NonZero"}
    assert shaped.sources == {"r": "NonZero"}  # the Constant is the same whatever the data: nothing to learn
    plain = helper.make_graph(nodes[-1:], "plain", graph.input, graph.output[-1:])
    assert not data_shaped(helper.make_model(plain, opset_imports=[helper.make_opsetid("", 17)]))
