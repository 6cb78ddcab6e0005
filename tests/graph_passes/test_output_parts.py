"""Outputs that hold box coordinates next to class probabilities (YOLO-family detectors) are found with their
parts, and the nodes that decode them. Oracle: onnxruntime's outputs (probabilities lie in [0, 1], coordinates in
pixels do not) and the architectures' own layout (tests/yolo.py)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import yolo

from onnxkd.graph_passes.analyze.output_parts import Part, decodes, decoding_nodes, output_parts

# (kind) -> the part axis and the parts: v8 [N, 4 + 3 classes, anchors]; v5 [N, anchors, 4 + objectness + 3]
EXPECTED = {"v8": (1, (Part(0, 4, False), Part(4, 7, True))), "v5": (2, (Part(0, 4, False), Part(4, 8, True)))}


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("kind", ["v8", "v5"])
def test_a_yolo_output_is_found_with_its_parts(yolo_model, kind, exporter):
    path = yolo_model(kind, exporter)
    found = output_parts(ir.load(str(path)))
    assert list(found) == ["output0"]
    axis, parts = EXPECTED[kind]
    assert (found["output0"].axis, found["output0"].parts) == (axis, parts)
    # onnxruntime at a size the export never saw: the parts cover the axis, probabilities in [0, 1], pixels beyond
    y = ort.InferenceSession(str(path)).run(None, {"images": yolo.images(2, (96, 128))})[0]
    assert y.shape[axis] == parts[-1].stop
    for part in parts:
        values = np.take(y, range(part.start, part.stop), axis=axis)
        assert ((values >= 0) & (values <= 1)).all() == part.probabilities


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_the_decode_is_everything_after_the_learned_layers(yolo_model, exporter):
    model = ir.load(str(yolo_model("v8", exporter)))
    decoding = decoding_nodes(model)
    nodes = {node.name: node for node in model.graph}
    weights = {node.inputs[1].name: name for name, node in nodes.items() if node.op_type == "Conv"}
    # the DFL expectation (a Conv over softmax bins) is decoding; the head's learned Convs are not
    assert weights[next(w for w in weights if "dfl" in w)] in decoding
    head = [name for w, name in weights.items() if w.startswith(("box.", "cls."))]
    assert len(head) >= 6 and not set(head) & set(decoding)  # the last layer per level (legacy folds the rest)
    ops = {nodes[name].op_type for name in decoding}
    assert {"Sigmoid", "Softmax", "Concat"} <= ops and set(decoding.values()) == {"output0"}
    last = model.graph.outputs[0].producer()
    assert last.name in decoding and all(v.producer().name in decoding for v in last.inputs)


def test_other_outputs_have_no_parts(zoo_model, tmp_path):
    import torch
    from torch import nn

    assert output_parts(ir.load(str(zoo_model("resnet")))) == {}

    class TwoMaps(nn.Module):  # probabilities only (two sigmoid maps), and values only (two conv maps)
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return torch.cat((self.a(x).sigmoid(), self.b(x).sigmoid()), 1), torch.cat((self.a(x), self.b(x)), 1)

    path = tmp_path / "maps.onnx"
    torch.onnx.export(TwoMaps(), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False)
    assert output_parts(ir.load(str(path))) == {}


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_an_nms_free_head_has_its_best_scores_found(tmp_path, exporter):
    """YOLOv10-style: the best class's probability per kept anchor (ReduceMax or TopK of the Sigmoid), next to
    its box in pixels and its class id as a float: three parts."""
    import torch
    from torch import nn

    class NmsFree(nn.Module):
        def __init__(self):
            super().__init__()
            self.box, self.cls = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 5, 1)

        def forward(self, x):
            boxes = (self.box(x).flatten(2).transpose(1, 2) * 64).abs()  # [N, A, 4] pixels
            scores = self.cls(x).flatten(2).transpose(1, 2).sigmoid()  # [N, A, classes]
            best, label = scores.max(-1, keepdim=True)
            top, index = best.topk(10, dim=1)
            return torch.cat((boxes.gather(1, index.expand(-1, -1, 4)), top, label.gather(1, index).float()), -1)

    path = tmp_path / "nms-free.onnx"
    x = torch.rand(1, 3, 8, 8)
    if exporter == "legacy":
        torch.onnx.export(NmsFree().eval(), (x,), str(path), dynamo=False, opset_version=17)
    else:
        torch.onnx.export(NmsFree().eval(), (x,), str(path))
    (found,) = output_parts(ir.load(str(path))).values()
    assert (found.axis, found.parts) == (2, (Part(0, 4, False), Part(4, 5, True), Part(5, 6, False)))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("kind", ["v8", "v5"])
def test_a_yolo_detector_is_cut_and_equals_the_oracle_at_other_sizes(yolo_model, kind, exporter):
    """Pruning a YOLO detector (C2f's chunk, SPPF's concatenation of one tensor four times, the upsampling neck)
    equals the original with the removed channels zeroed where they are consumed, at sizes the export never saw;
    the class count and the DFL bins stay whole."""
    from prune_oracle import prune_and_check

    from onnxkd.graph_passes.metrics import count_macs
    from onnxkd.model import load

    path = yolo_model(kind, exporter)
    feeds = [{"images": yolo.images(2, size, seed=4)} for size in ((96, 128), (128, 64))]
    result = prune_and_check(path, feeds)
    macs = [sum(count_macs(m, {"images": [1, 3, 128, 128]}).values()) for m in (load(path), result.model)]
    assert macs[1] < 0.6 * macs[0]
    frozen = [g.frozen for g in result.groups if g.frozen]
    assert any("graph output" in reason for reason in frozen)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("kind, heads", [("v8", 6), ("v5", 2)])
def test_what_the_output_is_decoded_from_is_the_last_learned_layers(yolo_model, kind, heads, exporter):
    """v8: each level's box and class Conv (3 levels); v5: each level's one Conv (2 levels), in graph order."""
    model = ir.load(str(yolo_model(kind, exporter)))
    (found,) = (d.heads for d in decodes(model).values())
    producers = {v.name: node for node in model.graph for v in node.outputs}
    assert len(found) == heads and all(producers[t].op_type == "Conv" for t in found)
    order = [node.name for node in model.graph]
    assert [order.index(producers[t].name) for t in found] == sorted(order.index(producers[t].name) for t in found)


def test_unnamed_nodes_are_followed_too(yolo_model):
    """Some exporters leave nodes unnamed: the decode is walked by node, not by name."""
    import onnx

    proto = onnx.load(str(yolo_model("v8", "legacy")))
    named = decodes(ir.from_proto(proto))
    for node in proto.graph.node:
        node.name = ""
    assert decodes(ir.from_proto(proto)) == named and len(named["output0"].heads) == 6
