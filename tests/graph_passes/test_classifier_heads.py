"""The class scores behind a classifier's outputs: through a Softmax, an ArgMax, a ReduceMax or a TopK over the
class axis, to the logits; hand-built graphs, the expected tensor names known by construction."""

from __future__ import annotations

import pytest
from classifier_heads import deployed
from onnx import TensorProto, helper

import onnxkd
from onnxkd.graph_passes.analyze.classifier_heads import class_id_outputs, scores_behind


@pytest.mark.parametrize("head, expected", [
    ("argmax", {"class_id": "logits", "confidence": "logits"}),
    ("topk", {"top3_probs": "logits", "top3_ids": "logits"}),
])
def test_deployment_heads_lead_back_to_the_logits(digits, tmp_path, head, expected):
    model = onnxkd.load(deployed(digits["teacher"], tmp_path / "deployed.onnx", head))
    assert scores_behind(model) == expected
    assert class_id_outputs(model) == ({"class_id"} if head == "argmax" else set())


def _model(nodes, outputs, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs])
    return onnxkd.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def test_the_class_axis_only_and_casts_are_followed():
    model = _model([helper.make_node("Softmax", ["x"], ["p"], axis=1),
                    helper.make_node("ArgMax", ["p"], ["a"], axis=1, keepdims=1),
                    helper.make_node("Cast", ["a"], ["id32"], to=TensorProto.INT32),
                    helper.make_node("ArgMax", ["x"], ["over_batch"], axis=0),
                    helper.make_node("ReduceMax", ["x"], ["max_all"], keepdims=0),
                    helper.make_node("Neg", ["x"], ["plain"]),
                    helper.make_node("ArgMax", ["plain"], ["raw_id"], axis=-1, keepdims=0),
                    helper.make_node("ReduceMax", ["plain"], ["raw_max"], axes=[1], keepdims=0)],
                   ["id32", "over_batch", "max_all", "plain", "p", "raw_id", "raw_max"])
    # the Softmax's input (the logits); an ArgMax of raw scores reads them, a max of raw scores is no classifier's
    assert scores_behind(model) == {"id32": "x", "p": "x", "raw_id": "plain"}
    assert class_id_outputs(model) == {"id32", "raw_id"}


def test_reduce_max_axes_given_as_an_input_from_opset_18():
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [-1])
    model = _model([helper.make_node("Softmax", ["x"], ["p"], axis=-1),
                    helper.make_node("Constant", [], ["axes"], value=axes),
                    helper.make_node("ReduceMax", ["p", "axes"], ["m"], keepdims=0)], ["m"], opset=18)
    assert scores_behind(model) == {"m": "x"}
