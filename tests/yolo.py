"""YOLO-family detectors as ultralytics writes them, small: the tensor they return holds box coordinates in
pixels next to class probabilities (a Sigmoid's).

``YoloV8`` (also v9-v11): C2f blocks (a chunk in two), SPPF, an upsampling neck, a decoupled head per level and
the DFL expectation (a softmax over 16 bins, then a 1x1 Conv with the weights 0..15); the output is
``[N, 4 + classes, anchors]``: cx, cy, w, h, then each class's probability. ``YoloV5Head``: a Sigmoid of the whole
head, xy and wh decoded with grids and anchors per level, ``[N, anchors, 5 + classes]``: x, y, w, h, objectness,
classes. Both exported with dynamic batch, height and width.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ConvBnSiLU(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.c = c2 // 2
        self.cv1, self.cv2 = ConvBnSiLU(c1, 2 * self.c), ConvBnSiLU(3 * self.c, c2)
        self.m = nn.Sequential(ConvBnSiLU(self.c, self.c, 3), ConvBnSiLU(self.c, self.c, 3))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.append(y[-1] + self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2, self.m = ConvBnSiLU(c, c // 2), ConvBnSiLU(2 * c, c), nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Dfl(nn.Module):
    def __init__(self, bins: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1)
        self.bins = bins

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def anchors_of(feats: list[torch.Tensor], strides: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    points, scale = [], []
    for f, stride in zip(feats, strides):
        h, w = f.shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float) + 0.5, torch.arange(w, dtype=torch.float) + 0.5,
                                indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        scale.append(torch.full((h * w, 1), float(stride)))
    return torch.cat(points).transpose(0, 1), torch.cat(scale).transpose(0, 1)


class YoloV8(nn.Module):
    strides = [8, 16, 32]

    def __init__(self, classes: int = 3, w: int = 8, bins: int = 16):
        super().__init__()
        self.classes, self.bins = classes, bins
        self.stem = nn.Sequential(ConvBnSiLU(3, w, 3, 2), ConvBnSiLU(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(ConvBnSiLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))
        self.p4 = nn.Sequential(ConvBnSiLU(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w))
        self.p5 = nn.Sequential(ConvBnSiLU(8 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w), SPPF(8 * w))
        self.up = nn.Upsample(None, 2, "nearest")
        self.n4, self.n3 = C2f(16 * w, 8 * w), C2f(12 * w, 4 * w)
        ch = (4 * w, 8 * w, 8 * w)
        self.box = nn.ModuleList(nn.Sequential(ConvBnSiLU(c, 4 * bins, 3), nn.Conv2d(4 * bins, 4 * bins, 1)) for c in ch)
        self.cls = nn.ModuleList(nn.Sequential(ConvBnSiLU(c, 4 * w, 3), nn.Conv2d(4 * w, classes, 1)) for c in ch)
        self.dfl = Dfl(bins)

    def heads(self, x) -> list[torch.Tensor]:
        """The raw head per level (strides 8, 16, 32): [N, 4 * bins + classes, H / stride, W / stride]."""
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        n3 = self.n3(torch.cat([self.up(n4), p3], 1))
        return [torch.cat((self.box[i](f), self.cls[i](f)), 1) for i, f in enumerate((n3, n4, p5))]

    def forward(self, x):
        levels = self.heads(x)
        b = levels[0].shape[0]
        flat = torch.cat([f.view(b, 4 * self.bins + self.classes, -1) for f in levels], 2)
        anchors, strides = anchors_of(levels, self.strides)
        box, cls = flat.split((4 * self.bins, self.classes), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        a = anchors.unsqueeze(0)
        x1y1, x2y2 = a - lt, a + rb
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((boxes, cls.sigmoid()), 1)


class YoloV5Head(nn.Module):
    """Two levels (strides 8 and 16), two anchors each."""

    def __init__(self, classes: int = 3, w: int = 16, anchors: int = 2):
        super().__init__()
        self.no, self.na, self.classes = classes + 5, anchors, classes
        self.p3 = nn.Sequential(ConvBnSiLU(3, w, 3, 4), ConvBnSiLU(w, w, 3, 2))
        self.p4 = ConvBnSiLU(w, 2 * w, 3, 2)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * anchors, 1) for c in (w, 2 * w))
        self.register_buffer("anchor_grid", torch.tensor([[10.0, 13, 16, 30], [30, 61, 62, 45]]).view(2, anchors, 2))

    def forward(self, x):
        p3 = self.p3(x)
        z = []
        for i, (f, stride) in enumerate(((p3, 8), (self.p4(p3), 16))):
            y = self.m[i](f)
            b, _, ny, nx = y.shape
            y = y.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2)
            gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2).float() - 0.5
            xy, wh, conf = y.sigmoid().split((2, 2, self.classes + 1), 4)
            xy = (xy * 2 + grid) * stride
            wh = (wh * 2) ** 2 * (self.anchor_grid[i] * stride).view(1, self.na, 1, 1, 2)
            z.append(torch.cat((xy, wh, conf), 4).view(b, -1, self.no))
        return torch.cat(z, 1)


def build(kind: str = "v8", seed: int = 0) -> nn.Module:
    """An eval-mode detector whose BatchNorms have non-trivial statistics."""
    torch.manual_seed(seed)
    net = (YoloV8() if kind == "v8" else YoloV5Head()).eval()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return net


def export(path: str | Path, kind: str = "v8", exporter: str = "dynamo", seed: int = 0, size: tuple = (64, 96),
           net: nn.Module | None = None) -> Path:
    """The detector (``net``, else ``build(kind, seed)``) exported as its users export it: dynamic batch, height and
    width; the dynamo exporter with its defaults (weights in ``path.data``)."""
    net, path = (net or build(kind, seed)).eval(), Path(path)
    example = torch.rand(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dynamic = torch.export.Dim.DYNAMIC
            torch.onnx.export(net, (example,), str(path), input_names=["images"], output_names=["output0"],
                              dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
        else:
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                              output_names=["output0"], dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                                                      "output0": {0: "batch"}})
    return path


def images(count: int, size: tuple = (64, 96), seed: int = 0) -> np.ndarray:
    """Blocky colour images (8x8 pixel cells) with noise: features that vary, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    cells = rng.random((count, 3, size[0] // 8, size[1] // 8)).astype(np.float32)
    return np.kron(cells, np.ones((1, 1, 8, 8), np.float32)) + 0.05 * rng.standard_normal(
        (count, 3, *size)).astype(np.float32)
