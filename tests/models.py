"""The architecture zoo: small torch models of each family onnxkd must handle, and their ONNX exports.

Each family is defined here (no torchvision/timm/transformers) at a size that exports and runs in
well under a second, and is exported with BOTH torch exporters: the legacy TorchScript one
(``dynamo=False``: deduplicated initializers behind Identity, opset 17) and the dynamo one
(``dynamo=True``: value_info for every tensor, weights optionally in an external ``.data`` file).

``export(name, folder, dynamo=...)`` caches by path, so a test session exports each model once.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- CNN building blocks


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetTiny(nn.Module):
    """Residual Adds couple the channels of a whole stage; a downsample branch starts a new group."""

    def __init__(self, num_classes: int = 10, width: int = 16, groups: int = 1):
        super().__init__()
        self.stem = conv_bn_act(3, width)
        self.layer1 = nn.Sequential(BasicBlock(width, width, groups=groups), BasicBlock(width, width, groups=groups))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2, groups=groups), BasicBlock(2 * width, 2 * width, groups=groups))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int, act: type, se: bool):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn_act(cin, hidden, 1, act=act), conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=act)]
        if se:
            layers.append(SqueezeExcite(hidden, max(4, hidden // 4)))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2Tiny(nn.Module):
    """Depthwise convs (group == channels) and ReLU6 (Clip)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 16, stride=2, act=nn.ReLU6)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 4, 1, nn.ReLU6, se=False),
            InvertedResidual(16, 24, 4, 2, nn.ReLU6, se=False),
            InvertedResidual(24, 24, 4, 1, nn.ReLU6, se=False),
        )
        self.head = conv_bn_act(24, 64, 1, act=nn.ReLU6)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


class MobileNetV3Tiny(nn.Module):
    """Squeeze-excitation gates, hardswish/hardsigmoid."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 16, stride=2, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 3, 1, nn.ReLU, se=True),
            InvertedResidual(16, 24, 3, 2, nn.Hardswish, se=True),
            InvertedResidual(24, 24, 3, 1, nn.Hardswish, se=True),
        )
        self.head = nn.Sequential(nn.Linear(24, 48), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(48, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.head(torch.flatten(x, 1))


class WrittenHardSwish(nn.Module):
    """x * relu6(x + 3) / 6 spelled out, as TensorFlow and PaddlePaddle exports (and older torch code) write it."""

    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class WrittenSqueezeExcite(SqueezeExcite):
    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * (F.relu6(self.fc2(F.relu(self.fc1(scale))) + 3) / 6)


class MobileNetV3Written(nn.Module):
    """MobileNetV3 as other exporters write it: hard-swish and hard-sigmoid as Add/Clip/Mul/Div chains."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 16, stride=2, act=WrittenHardSwish)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 3, 1, nn.ReLU, se=True),
            InvertedResidual(16, 24, 3, 2, WrittenHardSwish, se=True),
            InvertedResidual(24, 24, 3, 1, WrittenHardSwish, se=True),
            InvertedResidual(24, 40, 3, 2, WrittenHardSwish, se=True),
        )
        for module in self.blocks.modules():
            if type(module) is SqueezeExcite:
                module.__class__ = WrittenSqueezeExcite
        self.head = nn.Sequential(nn.Linear(40, 96), WrittenHardSwish(), nn.Dropout(0.2), nn.Linear(96, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.head(torch.flatten(x, 1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNetTiny(nn.Module):
    """Concat on the channel axis: consumers see the producers' channels at offsets."""

    def __init__(self, num_classes: int = 10, growth: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = nn.Sequential(DenseLayer(16, growth), DenseLayer(16 + growth, growth), DenseLayer(16 + 2 * growth, growth))
        c = 16 + 3 * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 24, 1, bias=False), nn.AvgPool2d(2))
        self.block2 = nn.Sequential(DenseLayer(24, growth), DenseLayer(24 + growth, growth))
        self.norm = nn.BatchNorm2d(24 + 2 * growth)
        self.fc = nn.Linear(24 + 2 * growth, num_classes)

    def forward(self, x):
        x = self.block2(self.transition(self.block1(self.stem(x))))
        x = F.relu(self.norm(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class UNetTiny(nn.Module):
    """ConvTranspose and Resize upsampling, Concat skips, a dense (segmentation) output."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn_act(3, 16), conv_bn_act(16, 16))
        self.enc2 = nn.Sequential(conv_bn_act(16, 32), conv_bn_act(32, 32))
        self.bottom = conv_bn_act(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, 2)
        self.dec2 = conv_bn_act(64, 32)
        self.dec1 = conv_bn_act(32 + 16, 16)
        self.out = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.dec1(torch.cat([d1, e1], 1)))


class ResNeXtTiny(ResNetTiny):
    """Grouped 3x3 convs (group=4): a kept-channel set must keep every group equally wide."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, width=16, groups=4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNet v2 unit: stride 1 passes one half of the channels through (chunk) and runs a
    branch on the other, stride 2 runs two branches on all of them; the halves are concatenated and shuffled."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        self.branch1 = nn.Sequential(conv_bn_act(cin, cin, 3, stride, cin, nn.Identity), conv_bn_act(cin, half, 1)) \
            if stride > 1 else None
        self.branch2 = nn.Sequential(conv_bn_act(cin if stride > 1 else half, half, 1),
                                     conv_bn_act(half, half, 3, stride, half, nn.Identity), conv_bn_act(half, half, 1))

    def forward(self, x):
        if self.branch1 is None:
            passed, x = x.chunk(2, dim=1)
            out = torch.cat((passed, self.branch2(x)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Tiny(nn.Module):
    """Channel split (chunk), concat and channel shuffle between units: only the branches' inner convs can be cut
    (a shuffled half pairs channels across the concat, and the next chunk needs equal halves)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_act(3, 24, 3, 2)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.head = conv_bn_act(96, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.head(self.stage3(self.stage2(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class ShuffleV1Unit(nn.Module):
    """ShuffleNet v1's unit (the ONNX zoo's Caffe2 model): grouped 1x1 conv -> shuffle -> depthwise 3x3 -> grouped
    1x1 conv; stride 1 adds the input, stride 2 concatenates it average-pooled."""

    def __init__(self, cin: int, cout: int, mid: int, groups: int, stride: int):
        super().__init__()
        self.groups, self.stride = groups, stride
        self.reduce = conv_bn_act(cin, mid, 1, groups=groups)
        self.depthwise = conv_bn_act(mid, mid, 3, stride, mid, nn.Identity)
        self.expand = conv_bn_act(mid, cout - cin if stride > 1 else cout, 1, groups=groups, act=nn.Identity)

    def forward(self, x):
        out = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        if self.stride > 1:
            return torch.relu(torch.cat((out, nn.functional.avg_pool2d(x, 3, 2, 1)), dim=1))
        return torch.relu(out + x)


class ShuffleNetV1Tiny(nn.Module):
    """4 conv groups of 10 positions in stage 1, as the ONNX zoo's 34: a shuffled channel straddles the next
    grouped conv's groups, and the residual stream (4 x 10 conv outputs + the stem's 24) does not line up with
    the 4 x 16 conv groups that read it."""

    def __init__(self, num_classes: int = 10, groups: int = 4):
        super().__init__()
        self.stem = conv_bn_act(3, 24, 3, 2)
        self.stage1 = nn.Sequential(ShuffleV1Unit(24, 64, 40, groups, 2), ShuffleV1Unit(64, 64, 40, groups, 1),
                                    ShuffleV1Unit(64, 64, 40, groups, 1))
        self.stage2 = nn.Sequential(ShuffleV1Unit(64, 128, 64, groups, 2), ShuffleV1Unit(128, 128, 64, groups, 1))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.stage2(self.stage1(self.stem(x))).mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt norm: LayerNorm over the channels of an NCHW tensor (permute, normalise, back)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, then channels-last LayerNorm -> Linear(4x) -> GELU -> Linear, layer scale, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.linspace(0.2, 1.0, dim))

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + (self.gamma * self.fc2(F.gelu(self.fc1(y)))).permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    """Patchify stem, LayerNorm'd residual streams (frozen unless --prune-normalized), MLP widths on NHWC."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 4, 4), LayerNorm2d(24, eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(24), ConvNeXtBlock(24))
        self.down = nn.Sequential(LayerNorm2d(24, eps=1e-6), nn.Conv2d(24, 48, 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(48), ConvNeXtBlock(48))
        self.norm = nn.LayerNorm(48, eps=1e-6)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.norm(x.mean((2, 3))))


# --------------------------------------------------------------------------- transformers


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.reshape(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h)
        if self.causal:
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, -1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TransformerEncoderTiny(nn.Module):
    """BERT-style: token + position embeddings, post-blocks LayerNorm, mean-pooled classifier."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2, num_classes: int = 5, max_len: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp, causal=False) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        return self.head(self.ln(self.blocks(x)).mean(1))


class GPTTiny(nn.Module):
    """Decoder: causal mask (Trilu + Where), positions from arange (Range), tied LM head."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2, max_len: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp, causal=True) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.blocks(self.tok(ids) + self.pos(positions))
        return self.lm_head(self.ln(x))


# --------------------------------------------------------------------------- transformers as real exporters write them


class EncoderBlock(nn.Module):
    """A pre-norm block around any attention module ``attn(x, mask) -> y``."""

    def __init__(self, dim: int, mlp: int, attn: nn.Module):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim), attn, nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln1(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class MaskedAttention(SelfAttention):
    """BERT's: an additive mask [B, 1, 1, S] broadcast over the heads, added to the scores."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads, causal=False)

    def forward(self, x, mask=None):
        b, t, d = x.shape
        h = self.heads
        q, k, v = (y.reshape(b, t, h, d // h).transpose(1, 2) for y in (self.q(x), self.k(x), self.v(x)))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // h) + mask
        out = torch.softmax(scores, -1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class BertTiny(nn.Module):
    """Token ids with padding (id 0): the mask is (1 - (ids != 0)[:, None, None, :]) * -10000, as HF BERT."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2, max_len: int = 16):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([EncoderBlock(dim, mlp, MaskedAttention(dim, heads)) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, ids):
        mask = (1.0 - (ids != 0)[:, None, None, :].float()) * -10000.0
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x)[:, 0])


class SdpaAttention(nn.Module):
    """torch's fused scaled_dot_product_attention (the dynamo exporter writes it out over a heads axis)."""

    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = (y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (self.q(x), self.k(x), self.v(x)))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class FusedQkvAttention(nn.Module):
    """timm's Attention (ViT, DeiT, Swin, BEiT): one qkv projection reshaped to [B, T, 3, heads, head_dim],
    permuted to [3, B, heads, T, head_dim] and unbound into q, k and v."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class EinsumAttention(nn.Module):
    """Keras' MultiHeadAttention as tf2onnx writes it: EinsumDense projections with [dim, heads, head_dim]
    kernels, scores and mixing as Einsums over [B, T, heads, head_dim], and an [heads, head_dim, dim] output kernel
    (Keras' own equations)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        shape = (dim, heads, dim // heads)
        self.wq, self.wk, self.wv = (nn.Parameter(torch.randn(shape) * dim ** -0.5) for _ in range(3))
        self.bq, self.bk, self.bv = (nn.Parameter(torch.randn(shape[1:]) * 0.1) for _ in range(3))
        self.wo, self.bo = nn.Parameter(torch.randn(shape[1:] + shape[:1]) * dim ** -0.5), nn.Parameter(torch.zeros(dim))

    def forward(self, x, mask=None):
        q, k, v = (torch.einsum("abc,cde->abde", x, w) + b for w, b in ((self.wq, self.bq), (self.wk, self.bk),
                                                                         (self.wv, self.bv)))
        scores = torch.einsum("aecd,abcd->acbe", k, q * q.shape[-1] ** -0.5)
        mixed = torch.einsum("acbe,aecd->abcd", scores.softmax(-1), v)
        return torch.einsum("abcd,cde->abe", mixed, self.wo) + self.bo


def rotate(x):
    """Rotary position embedding on [B, heads, T, head_dim] (Llama's rotate_half: slices of head_dim)."""
    t, d = x.shape[-2], x.shape[-1]
    angles = torch.arange(t, device=x.device).float()[:, None] / (100 ** (torch.arange(0, d, 2, device=x.device).float() / d))[None]
    angles = torch.cat([angles, angles], -1)
    return x * angles.cos() + torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1) * angles.sin()


class GroupedQueryAttention(nn.Module):
    """Llama's: query heads share key/value heads (repeat_kv: expand then reshape), rotary embeddings, causal
    scaled-dot-product attention, no biases. Cutting a key/value head cuts the query heads that read it."""

    def __init__(self, dim: int, heads: int, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q, self.o = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.k, self.v = (nn.Linear(dim, kv_heads * self.head_dim, bias=False) for _ in range(2))

    def forward(self, x, mask=None):
        b, t, _ = x.shape
        q = rotate(self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2))
        k = rotate(self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2))
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        repeat = self.heads // self.kv_heads
        k, v = (y[:, :, None].expand(b, self.kv_heads, repeat, t, self.head_dim).reshape(b, self.heads, t, self.head_dim)
                for y in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, t, -1))


class RMSNorm(nn.Module):
    """Llama's, as exporters write it below opset 23: x * rsqrt(mean(x^2) + eps) * w."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(width) + 0.5)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class LlamaBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attn, self.norm2 = RMSNorm(dim), GroupedQueryAttention(dim, heads), RMSNorm(dim)
        self.gate, self.up, self.down = nn.Linear(dim, mlp, bias=False), nn.Linear(dim, mlp, bias=False), nn.Linear(mlp, dim, bias=False)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LlamaTiny(nn.Module):
    """A Llama-family decoder: RMSNorm, grouped-query attention with RoPE, a SwiGLU MLP, untied LM head."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([LlamaBlock(dim, heads, mlp) for _ in range(layers)])
        self.norm, self.lm_head = RMSNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        x = self.tok(ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


class TokenEncoder(nn.Module):
    """Token + learned position embeddings, pre-norm blocks around ``attention(dim, heads)``, mean-pooled head."""

    def __init__(self, attention: type, vocab: int = 50, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2,
                 max_len: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.ModuleList([EncoderBlock(dim, mlp, attention(dim, heads)) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x).mean(1))


class PackedAttention(nn.Module):
    """nn.MultiheadAttention (torchvision's ViT): one packed in-projection to 3*E, split into q, k, v."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x, mask=None):
        # the functional form: nn.MultiheadAttention's inference fast path is a single op no exporter writes
        m = self.mha
        out, _ = F.multi_head_attention_forward(
            x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), m.embed_dim, m.num_heads, m.in_proj_weight,
            m.in_proj_bias, None, None, False, 0.0, m.out_proj.weight, m.out_proj.bias, training=False,
            need_weights=False)
        return out.transpose(0, 1)


class ViTTiny(nn.Module):
    """Patches from a strided conv, a learned class token concatenated in front, learned positions."""

    def __init__(self, dim: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2, patch: int = 4, size: int = 16):
        super().__init__()
        self.patches = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([EncoderBlock(dim, mlp, PackedAttention(dim, heads)) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, images):
        x = self.patches(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x)[:, 0])


class NativeMHA(nn.Module):
    """nn.MultiheadAttention called as modules call it: torch runs its fused inference path, which the dynamo
    exporter writes as one packed projection to 3*E reshaped to (3, E) and selected with Gather."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x, mask=None):
        return self.mha(x, x, x, need_weights=False)[0]


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored [in, out], y = x @ W + b (addmm)."""

    def __init__(self, nin: int, nout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nin, nout) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nout))

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(shape)


class Gpt2Attention(nn.Module):
    """One fused c_attn projection to 3*E, split into q, k, v along the last axis; causal mask buffer."""

    def __init__(self, dim: int, heads: int, max_len: int = 16):
        super().__init__()
        self.heads = heads
        self.c_attn, self.c_proj = Conv1D(dim, 3 * dim), Conv1D(dim, dim)
        self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len, dtype=torch.bool)).view(1, 1, max_len, max_len))

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        scores = torch.where(self.bias[:, :, :t, :t], scores, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, -1) @ v
        return self.c_proj(out.transpose(1, 2).reshape(b, t, d))


class Gpt2Tiny(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, layers: int = 2, max_len: int = 16):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([EncoderBlock(dim, 4 * dim, Gpt2Attention(dim, heads, max_len)) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


# --------------------------------------------------------------------------- the zoo


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[], nn.Module]
    example_input: Callable[[int], torch.Tensor]  # batch size -> input
    family: str  # "cnn" or "transformer"


def _image(size: int) -> Callable[[int], torch.Tensor]:
    return lambda batch: torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))


def _tokens(length: int, vocab: int = 50) -> Callable[[int], torch.Tensor]:
    return lambda batch: torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(batch))


ZOO: dict[str, Arch] = {
    arch.name: arch
    for arch in [
        Arch("resnet", ResNetTiny, _image(32), "cnn"),
        Arch("mobilenetv2", MobileNetV2Tiny, _image(32), "cnn"),
        Arch("mobilenetv3", MobileNetV3Tiny, _image(32), "cnn"),
        Arch("mobilenetv3w", MobileNetV3Written, _image(32), "cnn"),
        Arch("densenet", DenseNetTiny, _image(32), "cnn"),
        Arch("unet", UNetTiny, _image(32), "cnn"),
        Arch("resnext", ResNeXtTiny, _image(32), "cnn"),
        Arch("shufflenetv1", ShuffleNetV1Tiny, _image(32), "cnn"),
        Arch("shufflenetv2", ShuffleNetV2Tiny, _image(32), "cnn"),
        Arch("convnext", ConvNeXtTiny, _image(32), "cnn"),
        Arch("transformer", TransformerEncoderTiny, _tokens(12), "transformer"),
        Arch("gpt", GPTTiny, _tokens(12), "transformer"),
        Arch("bert", BertTiny, _tokens(12), "transformer"),
        Arch("sdpa", lambda: TokenEncoder(SdpaAttention), _tokens(12), "transformer"),
        Arch("vit", ViTTiny, _image(16), "transformer"),
        Arch("mha", lambda: TokenEncoder(NativeMHA), _tokens(12), "transformer"),
        Arch("gpt2", Gpt2Tiny, _tokens(12), "transformer"),
        Arch("fusedqkv", lambda: TokenEncoder(FusedQkvAttention), _tokens(12), "transformer"),
        Arch("einsum", lambda: TokenEncoder(EinsumAttention), _tokens(12), "transformer"),
        Arch("llama", LlamaTiny, _tokens(12), "transformer"),
    ]
}

EXPORTERS = ("legacy", "dynamo")


def build(name: str, seed: int = 0) -> nn.Module:
    """The model with deterministic, non-trivial weights (BN stats randomised so BN is not identity)."""
    torch.manual_seed(seed)
    return randomise_batchnorm(ZOO[name].build())


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """BN statistics and affine drawn at random, so that BN is not the identity a fresh module is; eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def export(name: str, folder: str | Path, exporter: str = "legacy", *, external_data: bool = False,
           keep_batchnorm: bool = False, image_size: int | None = None, dynamic_seq: bool = False,
           channels_last: bool = False) -> Path:
    """Export zoo model ``name`` to ``folder/<name>-<exporter>.onnx`` (cached) with a dynamic batch axis.

    Both exporters fold BatchNorm into the convs before it; ``keep_batchnorm`` (legacy only) keeps the
    BatchNormalization nodes, as other exporters (TensorFlow, PaddlePaddle, the ONNX zoo) write them.
    ``image_size`` exports a CNN at another input size than its tests use (benchmarks: deployment sizes).
    ``dynamic_seq``: token models get a dynamic sequence axis too (up to 16), as NLP exports have it.
    ``channels_last`` (dynamo, CNNs): the model and example moved to torch.channels_last, as users do for speed
    (the exporter then writes a Flatten as as_strided).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sized = image_size is not None and ZOO[name].family == "cnn"
    suffix = ("-ext" if external_data else "") + ("-bn" if keep_batchnorm else "") + (f"-{image_size}" if sized else "")
    suffix += ("-seq" if dynamic_seq else "") + ("-cl" if channels_last else "")
    path = folder / f"{name}-{exporter}{suffix}.onnx"
    if path.exists():
        return path
    model = build(name)
    example = _image(image_size)(2) if sized else ZOO[name].example_input(2)
    input_name = "input" if example.is_floating_point() else "input_ids"
    if channels_last:
        model, example = model.to(memory_format=torch.channels_last), example.to(memory_format=torch.channels_last)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    # The legacy exporter traces with gradients enabled: nn.MultiheadAttention then takes its exportable path
    # (its fused inference op has no ONNX form); the dynamo exporter decomposes the fused op itself.
    with warnings.catch_warnings(), (torch.enable_grad() if exporter == "legacy" else torch.no_grad()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=17, do_constant_folding=not keep_batchnorm,
                input_names=[input_name], output_names=["output"],
                dynamic_axes={input_name: {0: "batch", **({1: "seq"} if dynamic_seq else {})}, "output": {0: "batch"}},
            )
        elif exporter == "dynamo" and not keep_batchnorm:
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[input_name], output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024),
                                 **({1: torch.export.Dim("seq", min=2, max=16)} if dynamic_seq else {})},),
                verbose=False,
            )
            program.save(str(path), external_data=external_data)
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    return path
