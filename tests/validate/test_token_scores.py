"""Outputs of class scores per position ([N, T, C]: a language model's or a tagger's logits, a CTC recognizer's
log-probabilities) are compared per token: top-1 agreement and KL over every position, checked with numpy on
onnxruntime's outputs; other rank-3 outputs keep the element-wise figures only."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxkd
from onnxkd.graph_passes.analyze.classifier_heads import token_score_outputs


def _tagger(path, seed: int, last: str, output: str) -> None:
    """x [N, 7, 4] @ W [4, 6] -> (LogSoftmax over ``last``) -> ``output`` [N, 7, 6]."""
    weight = np.random.default_rng(seed).standard_normal((4, 6)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["scores" if last else output])]
    if last:
        nodes.append(helper.make_node("LogSoftmax", ["scores"], [output], axis=-1 if last == "last" else 1))
    graph = helper.make_graph(nodes, "tagger", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7, 4])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 7, 6])],
                              [numpy_helper.from_array(weight, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("last, output, per_token", [
    ("last", "log_probs", True),    # a distribution over the last axis, whatever its name
    ("", "logits", True),           # a linear head named as Hugging Face names a language model's scores
    ("", "hidden", False),          # features
    ("axis1", "log_probs", False),  # a distribution over the time axis is not scores per token
])
def test_scores_per_position_are_compared_per_token(tmp_path, last, output, per_token):
    teacher, student = tmp_path / "t.onnx", tmp_path / "s.onnx"
    _tagger(teacher, 0, last, output)
    _tagger(student, 1, last, output)
    assert token_score_outputs(onnxkd.load(teacher)) == ({output} if per_token else set())
    x = np.random.default_rng(2).standard_normal((20, 7, 4)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    report = onnxkd.validate(str(teacher), str(student), data=str(tmp_path / "data.npz")).to_dict()
    [q] = report["quality"]
    t, s = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for p in (teacher, student))
    if per_token:
        assert q["per_token"] and q["top1_agreement"] == pytest.approx(np.mean(t.argmax(-1) == s.argmax(-1)))
        assert q["kl"] > 0
    else:
        assert not q.get("per_token") and q["top1_agreement"] is None


def test_the_agreement_gate_reads_the_agreement_per_token(tmp_path):
    """--min-agreement on a model whose only scores are per token gates on their agreement (it was refused: no
    [N, C] class scores); features alone are still refused, with that reason."""
    teacher, student = tmp_path / "t.onnx", tmp_path / "s.onnx"
    _tagger(teacher, 0, "", "logits")
    _tagger(student, 1, "", "logits")
    x = np.random.default_rng(2).standard_normal((20, 7, 4)).astype(np.float32)
    report = onnxkd.validate(str(teacher), str(student), data={"x": x}, min_agreement=0.99).to_dict()
    gate, finite = report["gates"]
    assert finite["name"] == "finite outputs" and finite["passed"]
    assert gate["value"] == report["quality"][0]["top1_agreement"] and gate["passed"] is False
    _tagger(teacher, 0, "", "hidden")
    _tagger(student, 1, "", "hidden")
    with pytest.raises(onnxkd.OnnxkdError, match="scores per token"):
        onnxkd.validate(str(teacher), str(student), data={"x": x}, min_agreement=0.99)
