"""Attention as other libraries write it: Einsum (Keras' EinsumDense and MultiHeadAttention through tf2onnx,
torch.einsum in research code), timm's packed qkv projection reshaped to [B, T, 3, heads, head_dim] and
unbound, and relative-position bias tables added to the scores (Swin, T5). Each froze every head before (the zoo's `einsum` and `fusedqkv` rows in test_prune_zoo.py cover the
exporters; this file the equation forms and the unbinding ops one by one): pruned models equal the
zero-at-consumers oracle at other batch sizes than the one analysed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import prunable_heads, prune_and_check
from models import GroupedQueryAttention
from torch import nn

from onnxkd.graph_passes.analyze.rules.einsum import parse
from onnxkd.graph_passes.api import channel_groups


def test_equations_are_read_as_numpy_reads_them():
    assert parse("bqhd,bkhd->bhqk", [4, 4]) == ([list("bqhd"), list("bkhd")], list("bhqk"))
    assert parse("ij,jk", [2, 2]) == ([list("ij"), list("jk")], list("ik"))  # implicit: letters used once, sorted
    assert parse("kj, ji", [2, 2]) == ([list("kj"), list("ji")], list("ik"))
    (x, w), out = parse("...c,cd->...d", [3, 2])
    assert x[2] == "c" and out[2] == "d" and x[:2] == out[:2] and len(set(x[:2])) == 2
    (x, w), out = parse("...c,...c", [3, 2])  # broadcast from the right: the last broadcast axis is shared
    assert x[1] == w[0] and out == x[:2]
    assert parse("...c,cd->...d", [None, 2]) is None  # an ellipsis of unknown rank
    assert parse("ab,bc->ac", [2]) is None  # fewer operands than terms
    assert parse("ab,bc->ac", [2, 3]) is None  # a term that does not fit its operand


def _model(path, nodes: list, weights: dict[str, tuple], output_shape: list) -> None:
    """x[N, 7, 6] through ``nodes`` to y; ``weights``: name -> shape, drawn at random."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in weights.items()]
    graph = helper.make_graph(nodes, "einsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _einsum(inputs: str, output: str, equation: str):
    return helper.make_node("Einsum", inputs.split(), [output], equation=equation)


def _two_layers(path, first: str, weight_shape: tuple, second: str = "btd,de->bte", output_shape=("N", 7, 5)):
    """x -Einsum(first, W)-> 16 channels -Relu-> Einsum(second, W2[16, 5]) -> y (W first where ``first`` says)."""
    operands = "W x" if first.startswith("dc") else "x W"
    _model(path, [_einsum(operands, "h", first), helper.make_node("Relu", ["h"], ["r"]), _einsum("r W2", "y", second)],
           {"W": weight_shape, "W2": (16, 5)}, list(output_shape))


def _feeds(batch: int) -> dict:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 7, 6)).astype(np.float32)}


@pytest.mark.parametrize("equation, weight_shape", [
    ("btc,cd->btd", (6, 16)),
    ("...c,cd->...d", (6, 16)),
    ("btc,dc->btd", (16, 6)),  # the weight stored [out, in]
    ("dc,btc->btd", (16, 6)),  # the weight first
])
def test_a_weight_einsum_is_a_linear_layer(tmp_path, equation, weight_shape):
    path = tmp_path / "m.onnx"
    _two_layers(path, equation, weight_shape)
    _, groups = channel_groups(path)
    assert [(g.size, g.prunable) for g in groups] == [(16, True), (5, False)], [(g.size, g.frozen) for g in groups]
    result = prune_and_check(path, [_feeds(2), _feeds(3)])
    assert result.summary["macs_after"] < 0.6 * result.summary["macs_before"]


def test_a_per_channel_einsum_weight_is_sliced_with_the_channels(tmp_path):
    """h * s written 'btd,d->btd': the scale follows the channels it multiplies."""
    path = tmp_path / "m.onnx"
    _model(path, [_einsum("x W", "h", "btc,cd->btd"), _einsum("h s", "hs", "btd,d->btd"),
                  helper.make_node("Relu", ["hs"], ["r"]), _einsum("r W2", "y", "btd,de->bte")],
           {"W": (6, 16), "s": (16,), "W2": (16, 5)}, ["N", 7, 5])
    group = channel_groups(path)[1][0]
    assert group.prunable and group.size == 16 and ("s", "param") in {(s.name, s.role) for s in group.slices}
    prune_and_check(path, [_feeds(2), _feeds(3)])


def test_channels_summed_over_time_are_cut_and_channels_summed_away_are_frozen(tmp_path):
    path = tmp_path / "time.onnx"
    _two_layers(path, "btc,cd->btd", (6, 16), second="btd,de->be", output_shape=("N", 5))
    assert channel_groups(path)[1][0].prunable
    prune_and_check(path, [_feeds(2), _feeds(3)])
    path = tmp_path / "channels.onnx"
    _model(path, [_einsum("x W", "h", "btc,cd->btd"), helper.make_node("Einsum", ["h"], ["y"], equation="btd->bt")],
           {"W": (6, 16)}, ["N", 7])
    [group] = channel_groups(path)[1]
    assert "summed over in an Einsum" in group.frozen


def test_a_weight_two_einsums_read_is_cut_for_each(tmp_path):
    """Tied weights (the first Einsum's W read again, transposed, by the second) are untied first: each reader
    then slices its own copy."""
    path = tmp_path / "m.onnx"
    _model(path, [_einsum("x W", "h", "btc,cd->btd"), helper.make_node("Relu", ["h"], ["r"]),
                  _einsum("r W", "y", "btd,cd->btc")], {"W": (6, 16)}, ["N", 7, 6])
    assert [g.size for g in channel_groups(path)[1] if g.prunable] == [16]
    prune_and_check(path, [_feeds(2), _feeds(3)])


class KerasStyleAttention(nn.Module):
    """Keras MultiHeadAttention's equations, with a [heads, head_dim] bias on every projection."""

    def __init__(self, dim: int = 24, heads: int = 3):
        super().__init__()
        shape = (dim, heads, dim // heads)
        self.w = nn.ParameterList([nn.Parameter(torch.randn(shape) * dim ** -0.5) for _ in range(3)])
        self.b = nn.ParameterList([nn.Parameter(torch.randn(shape[1:])) for _ in range(3)])
        self.wo = nn.Parameter(torch.randn(shape[1:] + shape[:1]) * dim ** -0.5)

    def forward(self, x):
        q, k, v = (torch.einsum("abc,cde->abde", x, w) + b for w, b in zip(self.w, self.b))
        scores = torch.einsum("aecd,abcd->acbe", k, q).softmax(-1)
        return torch.einsum("abcd,cde->abe", torch.einsum("acbe,aecd->abcd", scores, v), self.wo)


class TimmAttention(nn.Module):
    """timm's packed qkv, unbound by indexing (older timm: qkv[0], qkv[1], qkv[2]: Gathers)."""

    def __init__(self, dim: int = 24, heads: int = 3):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        return self.proj(((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class WindowAttention(nn.Module):
    """Swin's: a relative-position bias table [(2w-1)^2, heads] indexed by a constant buffer, reshaped to
    [n, n, heads] (-1 for the heads), permuted and added to the scores; the legacy exporter folds the gather
    into a constant and keeps the rest."""

    def __init__(self, dim: int = 24, heads: int = 3, window: int = 3):
        super().__init__()
        self.heads, self.table = heads, nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class T5Attention(nn.Module):
    """T5's relative-position bias: an embedding [buckets, heads] gathered by buckets computed from the length at
    run time, permuted to [heads, T, T] and added to the scores."""

    def __init__(self, dim: int = 24, heads: int = 3):
        super().__init__()
        self.heads, self.bias = heads, nn.Embedding(16, heads)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, x):
        position = torch.arange(x.shape[1])
        buckets = (position[None, :] - position[:, None]).clamp(-7, 8) + 7
        return self.attend(x, self.bias(buckets).permute(2, 0, 1).unsqueeze(0))

    def attend(self, x, bias):
        b, t, d = x.shape
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (self.q(x), self.k(x), self.v(x)))
        scores = q @ k.transpose(-1, -2) + bias
        return self.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class T5Encoder(nn.Module):
    """As Hugging Face's T5 does it: the first layer's bias table, gathered once, plus the padding mask, added to
    the scores of every layer. The table couples the heads of all layers: they are cut alike."""

    def __init__(self, dim: int = 24, heads: int = 3, layers: int = 2, cut_by_all: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(T5Attention(dim, heads) for _ in range(layers))
        self.cut_by_all = cut_by_all

    def forward(self, x):
        t = x.shape[1]
        position = torch.arange(t)
        buckets = (position[None, :] - position[:, None]).clamp(-7, 8) + 7
        mask = (x[:, None, None, :, 0] > 2).float() * -1e4  # [B, 1, 1, T]
        bias = self.layers[0].bias(buckets).permute(2, 0, 1).unsqueeze(0) + mask
        for layer in self.layers:
            x = x + layer.attend(x, bias)
        if not self.cut_by_all:  # the bias read again, by arithmetic, then where its heads axis must stay whole
            x = x + (bias * 0.5).reshape(x.shape[0], 3, t * t).sum(-1).sum(-1, keepdim=True)[:, :, None]
        return x


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_grouped_query_attention_loses_key_value_heads_with_their_query_heads(tmp_path, exporter):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    module, example = GroupedQueryAttention(32, 4).eval(), torch.randn(2, 6, 32)
    if exporter == "legacy":
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n", 1: "t"}, "y": {0: "n", 1: "t"}})
    else:
        dims = {0: torch.export.Dim("n", min=1, max=64), 1: torch.export.Dim("t", min=2, max=32)}
        torch.onnx.export(module, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                          dynamic_shapes=(dims,)).save(str(path))
    _, groups = channel_groups(path)
    [heads] = [g for g in groups if g.prunable and g.channel_block > 1]
    # a channel: one key/value head of 8 (k and v's rows) and the two query heads of 8 that read it (q's rows)
    assert heads.size == 2 and sorted(s.block for s in heads.slices if s.role == "out") == [8, 8, 16]
    feeds = [{"x": np.random.default_rng(n).standard_normal((n, t, 32)).astype(np.float32)} for n, t in ((1, 6), (3, 9))]
    result = prune_and_check(path, feeds)
    assert result.summary["pruned"] == 1 and result.summary["channels_after"] < result.summary["channels_before"]


@pytest.mark.parametrize("cut_by_all", [True, False])
def test_a_bias_table_shared_by_every_layer_cuts_their_heads_alike(tmp_path, cut_by_all):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(T5Encoder(cut_by_all=cut_by_all).eval(), (torch.randn(2, 5, 24),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    heads = prunable_heads(path)
    if not cut_by_all:
        assert heads == []
        return
    _, groups = channel_groups(path)
    [group] = [g for g in groups if g.prunable and g.channel_block > 1]
    assert group.size == 3 and {s.name for s in group.slices if s.role == "param"}  # the table, once
    feeds = [{"x": np.random.default_rng(n).standard_normal((n, 5, 24)).astype(np.float32)} for n in (1, 3)]
    result = prune_and_check(path, feeds, ratio=0.4)
    assert result.summary["pruned"] >= 1


@pytest.mark.parametrize("module, tokens", [(KerasStyleAttention, 5), (TimmAttention, 5), (WindowAttention, 9),
                                            (T5Attention, 5)])
def test_heads_are_cut(tmp_path, module, tokens):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(module().eval(), (torch.randn(2, tokens, 24),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    assert prunable_heads(path) == [(3, 8)], [(g.size, g.frozen) for g in channel_groups(path)[1]]
    feeds = [{"x": np.random.default_rng(n).standard_normal((n, tokens, 24)).astype(np.float32)} for n in (1, 3)]
    prune_and_check(path, feeds, ratio=0.4)


def test_a_packed_axis_that_is_not_taken_apart_is_cut_whole(tmp_path):
    """[B, T, 2E] -> [B, T, 2, E] summed over the 2: both halves are one tensor's channels, read together; the
    halves stay coupled as whole blocks, as before (no split of the producer's group)."""

    class Halves(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(6, 16), nn.Linear(8, 5)

        def forward(self, x):
            b, t, _ = x.shape
            return self.down(self.up(x).reshape(b, t, 2, 8).sum(2))

    path = tmp_path / "m.onnx"
    torch.onnx.export(Halves().eval(), (torch.randn(2, 7, 6),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    groups = channel_groups(path)[1]
    assert not any(g.prunable and g.size == 8 and g.channel_block == 1 for g in groups)  # no halves coupled
    if any(g.prunable for g in groups):
        prune_and_check(path, [_feeds(2), _feeds(3)])
