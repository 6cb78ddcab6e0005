"""The prune summary's channels are tensor channels, whatever unit a group is cut in (a GroupNorm's norm groups,
a grouped conv's channel across its groups). Oracle: the output channels of the convs, read from the weights of
the teacher and of the pruned model."""

from __future__ import annotations

import warnings

import onnx
import pytest
import torch
from torch import nn

import onnxkd


def _net(norm: str) -> nn.Module:
    layers, cin = [], 3
    for cout, groups in [(32, 1), (64, 4), (64, 1)]:
        norm_layer = nn.GroupNorm(8, cout) if norm == "group" else nn.BatchNorm2d(cout)
        layers += [nn.Conv2d(cin, cout, 3, padding=1, groups=groups), norm_layer, nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def _conv_channels(path) -> int:
    """Output channels of every Conv and Gemm: the rows of their weights."""
    model = onnx.load(str(path))
    weights = {t.name: t.dims for t in model.graph.initializer}
    return sum(weights[n.input[1]][0] for n in model.graph.node if n.op_type in ("Conv", "Gemm"))


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_channels_are_counted_in_channels_not_in_units(tmp_path, norm):
    torch.manual_seed(0)
    teacher = tmp_path / "t.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_net(norm), (torch.randn(2, 3, 16, 16),), str(teacher), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    result = onnxkd.prune(teacher, 0.5, round_to=1)
    pruned = onnxkd.save(result.model, tmp_path / "p.onnx")
    assert result.summary["channels_before"] == _conv_channels(teacher) == 32 + 64 + 64 + 10
    assert result.summary["channels_after"] == _conv_channels(pruned) < _conv_channels(teacher)
