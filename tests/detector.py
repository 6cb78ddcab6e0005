"""An end-to-end detector as users export them: a conv backbone with box and class heads, then
NonMaxSuppression and the kept boxes gathered, all in the graph (dynamic batch, height and width).

Its outputs ``selected`` ([K, 3] indices) and ``det_boxes`` ([K, 4]) hold as many rows as boxes survive over the
whole batch; ``boxes`` ([N, A, 4]) and ``scores`` ([N, C, A]) are what NonMaxSuppression reads, per sample.
``post_nms_only`` drops the latter two from the outputs, as end-to-end exports do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper


class DetectorBackbone(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU())
        self.box = nn.Conv2d(64, 4, 1)
        self.cls = nn.Conv2d(64, classes, 1)

    def forward(self, x):
        f = self.features(x)
        return self.box(f).flatten(2).transpose(1, 2), self.cls(f).flatten(2).sigmoid()


def export_detector(path: Path, seed: int = 0, post_nms_only: bool = False, scale_channel: float = 1.0) -> Path:
    """The detector at ``path``; ``scale_channel`` != 1 scales one channel of its second convolution (a student
    whose boxes and scores differ a little from the teacher's of the same seed)."""
    torch.manual_seed(seed)
    net = DetectorBackbone().eval()
    with torch.no_grad():
        net.features[2].weight[0] *= scale_channel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, input_names=["images"],
                          output_names=["boxes", "scores"],
                          dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}, "boxes": {0: "b", 1: "anchors"},
                                        "scores": {0: "b", 2: "anchors"}})
    model = onnx.load(str(path))
    graph = model.graph
    graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in [
        ("max_per_class", [100], np.int64), ("iou", [0.5], np.float32), ("score_threshold", [0.5], np.float32),
        ("column_0", [0], np.int64), ("column_2", [2], np.int64)])
    graph.node.extend([
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_per_class", "iou", "score_threshold"],
                         ["selected"], name="nms"),
        helper.make_node("Gather", ["selected", "column_0"], ["image_index"], axis=1, name="image_index"),
        helper.make_node("Gather", ["selected", "column_2"], ["box_index"], axis=1, name="box_index"),
        helper.make_node("Concat", ["image_index", "box_index"], ["kept"], axis=1, name="kept"),
        helper.make_node("GatherND", ["boxes", "kept"], ["det_boxes"], name="det_boxes"),
    ])
    kept = [o for o in graph.output if not post_nms_only]
    del graph.output[:]
    graph.output.extend(kept + [helper.make_tensor_value_info("selected", TensorProto.INT64, ["k", 3]),
                                helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["k", 4])])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def images(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size)).astype(np.float32)
