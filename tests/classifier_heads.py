"""A classifier as deployment exports write it: the class id (ArgMax of the probabilities) and its confidence
(ReduceMax), no scores among the outputs; or the top-k (TopK). Built on any classifier whose output is logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def deployed(classifier: Path, out: Path, head: str = "argmax") -> Path:
    """``classifier`` (one output, logits [N, C], opset 13-17) with its output replaced: ``head="argmax"``: class_id
    [N] (int64) and confidence [N]; ``"topk"``: top3_probs and top3_ids [N, 3]."""
    model = onnx.load(str(classifier))
    graph = model.graph
    logits = graph.output[0].name
    nodes = [helper.make_node("Softmax", [logits], ["probs"], axis=1)]
    if head == "argmax":
        nodes += [helper.make_node("ArgMax", ["probs"], ["class_id"], axis=1, keepdims=0),
                  helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0)]
        outputs = [helper.make_tensor_value_info("class_id", TensorProto.INT64, ["N"]),
                   helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N"])]
    else:
        graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "k"))
        nodes += [helper.make_node("TopK", ["probs", "k"], ["top3_probs", "top3_ids"], axis=1)]
        outputs = [helper.make_tensor_value_info("top3_probs", TensorProto.FLOAT, ["N", 3]),
                   helper.make_tensor_value_info("top3_ids", TensorProto.INT64, ["N", 3])]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
