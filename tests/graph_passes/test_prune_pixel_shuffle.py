"""DepthToSpace and SpaceToDepth (PixelShuffle in super-resolution nets: ESPCN, EDSR's upsamplers): the convolution
before them is cut as the channel order of the mode says, valid models equal to the zero-at-consumers oracle at
other batch and image sizes than the analysis saw. Both froze the convolutions around them before."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import prune_and_check
from torch import nn

from onnxkd.graph_passes.api import channel_groups


def _feeds(batch: int, size: int) -> dict:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)}


FEEDS = [_feeds(1, 8), _feeds(3, 12)]


def _conv_around(path, op: str, mode: str | None) -> None:
    """x -Conv(16)-Relu-> op(blocksize 2) -> Conv -> y."""
    rng = np.random.default_rng(0)
    after = 16 // 4 if op == "DepthToSpace" else 16 * 4
    weights = {"w1": (16, 3, 3, 3), "b1": (16,), "w2": (5, after, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node(op, ["r"], ["s"], blocksize=2, **({"mode": mode} if mode else {})),
             helper.make_node("Conv", ["s", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "pixels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("op, mode, channels", [
    ("DepthToSpace", "CRD", 4),  # channel c is rows [4c, 4c + 4) of the conv: whole blocks go
    ("DepthToSpace", "DCR", 4),  # channel c is row c of each of 4 chunks of 4: the chunks shrink alike
    ("SpaceToDepth", None, 16),  # every channel is written 4 times, once per pixel of a block
])
def test_the_convolution_before_is_cut_in_the_order_of_the_mode(tmp_path, op, mode, channels):
    path = tmp_path / "m.onnx"
    _conv_around(path, op, mode)
    [group] = [g for g in channel_groups(path)[1] if g.prunable]
    assert group.size == channels
    result = prune_and_check(path, FEEDS)
    assert result.summary["channels_after"] < result.summary["channels_before"]


class Upsampler(nn.Module):
    """EDSR's: a convolution to 4x the channels, PixelShuffle(2), a convolution on; then to RGB."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 16, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.PixelShuffle(2), nn.ReLU())
        self.tail = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.up(torch.relu(self.head(x))))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_pixel_shuffle_upsampler_is_cut(tmp_path, exporter):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    example = torch.randn(2, 3, 8, 8)
    if exporter == "legacy":
        torch.onnx.export(Upsampler().eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    else:
        dims = {0: torch.export.Dim("n", max=64), 2: torch.export.Dim("h", min=4, max=64),
                3: torch.export.Dim("w", min=4, max=64)}
        torch.onnx.export(Upsampler().eval(), (example,), dynamo=True, input_names=["x"], output_names=["y"],
                          dynamic_shapes=(dims,)).save(str(path))
    sizes = sorted(g.size for g in channel_groups(path)[1] if g.prunable)
    assert sizes == [16, 16], [(g.size, g.frozen) for g in channel_groups(path)[1]]  # head's 16, up's 64 in 4s
    prune_and_check(path, FEEDS)
