"""Attention as other libraries write it: Einsum (Keras' EinsumDense and MultiHeadAttention through tf2onnx,
torch.einsum in research code) and timm's packed qkv projection reshaped to [B, T, 3, heads, head_dim] and
unbound. Both froze every head before (the zoo's `einsum` and `fusedqkv` rows in test_prune_zoo.py cover the
exporters; this file the equation forms and the unbinding ops one by one): pruned models equal the
zero-at-consumers oracle at other batch sizes than the one analysed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import prunable_heads, prune_and_check
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


@pytest.mark.parametrize("module", [KerasStyleAttention, TimmAttention])
def test_heads_are_cut(tmp_path, module):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(module().eval(), (torch.randn(2, 5, 24),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    assert prunable_heads(path) == [(3, 8)]
    feeds = [{"x": np.random.default_rng(n).standard_normal((n, 5, 24)).astype(np.float32)} for n in (1, 3)]
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
