"""Dynamic dims are analysed at stand-in sizes; where the default primes do not fit a model, others are tried,
so channels are still followed (each case froze groups as "unknown shapes" before)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from prune_oracle import prune_and_check
from torch import nn

from onnxkd.graph_passes.api import channel_groups


class Pyramid(nn.Module):
    """A feature pyramid as detectors have it: H/8 and H/16 maps, the coarse one upsampled by 2 and concatenated
    with the fine one. At a prime height the two do not match (49 vs 2 x 25), so nothing after the Concat had a
    shape at the default stand-ins."""

    def __init__(self):
        super().__init__()
        self.p3 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
        self.p4 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(96, 48, 3, 1, 1), nn.ReLU())
        self.head = nn.Conv2d(48, 24, 1)
        self.predict = nn.Linear(24, 6)

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        fused = self.fuse(torch.cat([F.interpolate(p4, scale_factor=2.0, mode="nearest"), p3], 1))
        # every position a prediction, [batch, anchors, 6]: the head's channels go through a Reshape
        return self.predict(self.head(fused).flatten(2).transpose(1, 2))


def test_channels_are_followed_through_a_reshape_after_a_feature_pyramid_with_dynamic_size(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "pyramid.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Pyramid().eval(), (torch.randn(1, 3, 64, 64),), str(path), input_names=["images"],
                          dynamic_shapes=({0: torch.export.Dim("b"), 2: 16 * torch.export.Dim("h", max=64),
                                           3: 16 * torch.export.Dim("w", max=64)},))
    _, groups = channel_groups(path)
    assert [(g.size, g.frozen is None) for g in groups] == [(16, True), (32, True), (32, True), (64, True),
                                                            (48, True), (24, True), (6, False)], \
        [(g.source, g.frozen) for g in groups]
    rng = np.random.default_rng(0)
    prune_and_check(path, [{"images": rng.standard_normal((2, 3, h, w)).astype(np.float32)} for h, w in ((64, 64), (48, 96))])
