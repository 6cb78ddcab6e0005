"""Materialised broadcasts (nn.MultiheadAttention's key_padding_mask Expand-ed over the heads) go back to being
broadcasts, so attention heads can be cut; each rewrite is checked exact with onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from prune_oracle import assert_close, prunable_heads, prune_and_check, run
from torch import nn

from onnxkd.graph_passes.api import channel_groups
from onnxkd.graph_passes.normalize.broadcast_views import BroadcastViewsPass
from onnxkd.model import load


class PaddedEncoder(nn.Module):
    """Token ids with padding (id 0) through nn.MultiheadAttention with a key_padding_mask, as modules call it."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.attn = nn.ModuleList([nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(layers)])
        self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, dim)) for _ in range(layers)])
        self.head = nn.Linear(dim, 5)

    def forward(self, ids):
        padding = ids == 0
        x = self.tok(ids)
        for attn, mlp in zip(self.attn, self.mlp):
            x = x + attn(x, x, x, key_padding_mask=padding, need_weights=False)[0]
            x = x + mlp(x)
        return self.head(x[:, 0])


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def padded_encoder(request, tmp_path_factory):
    """The encoder exported with a dynamic batch, and with the dynamo exporter a dynamic sequence length too (the
    legacy exporter bakes the example's length into nn.MultiheadAttention's Reshapes: onnxruntime rejects that
    export at any other length)."""
    path = tmp_path_factory.mktemp("padded") / f"padded-{request.param}.onnx"
    torch.manual_seed(0)
    model, ids = PaddedEncoder().eval(), torch.randint(1, 50, (2, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if request.param == "legacy":
            with torch.enable_grad():  # the exportable (non-fused) path of nn.MultiheadAttention
                torch.onnx.export(model, (ids,), str(path), dynamo=False, opset_version=17, input_names=["input_ids"],
                                  dynamic_axes={"input_ids": {0: "batch"}})
        else:
            torch.onnx.export(model, (ids,), str(path), input_names=["input_ids"],
                              dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=64)},))
    return path


def _padded_ids(batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (batch, length)).astype(np.int64)
    for row in range(batch):
        ids[row, rng.integers(1, length):] = 0  # a different amount of padding per row
    return {"input_ids": ids}


def test_heads_are_cut_behind_a_key_padding_mask(padded_encoder):
    """One prunable heads group per attention block, and the cut model matches the oracle at two lengths."""
    assert prunable_heads(padded_encoder) == [(4, 8), (4, 8)]
    feeds = [_padded_ids(3, length, seed=length) for length in ((12, 7) if "dynamo" in padded_encoder.name else (12,))]
    prune_and_check(padded_encoder, feeds)
    prepared = channel_groups(padded_encoder)[0]  # the rewrites applied, nothing cut: the teacher's function
    for inputs in feeds:
        assert_close(run(load(padded_encoder), inputs), run(prepared, inputs))


# --------------------------------------------------------------------------- the rewrites alone, on small graphs


def _graph(nodes, inputs, output_shape, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, output_shape)],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _int64(name: str, values) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _rewritten(proto: onnx.ModelProto):
    import onnx_ir as ir

    model = ir.serde.deserialize_model(proto)
    modified = BroadcastViewsPass()(model).modified
    return model, modified, [n.op_type for n in model.graph]


def test_an_expand_the_other_operand_implies_is_dropped_and_one_it_does_not_is_kept():
    # out = Expand(x [B, 1, 4] -> [B, 3, 4]) + y [B, 3, 4]: y already has the 3, so x broadcasts by itself
    implied = _graph([helper.make_node("Expand", ["x", "shape"], ["e"]), helper.make_node("Add", ["e", "y"], ["out"])],
                     [("x", ["B", 1, 4]), ("y", ["B", 3, 4])], ["B", 3, 4], [_int64("shape", [1, 3, 1])])
    model, modified, ops = _rewritten(implied)
    assert modified and ops == ["Add"]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 1, 4)).astype(np.float32),
             "y": np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)}
    assert_close(run(model, feeds), run(implied, feeds))

    # out = Expand(x [B, 1, 4] -> [B, 3, 4]) + y [1, 1, 4]: without the Expand the output would be [B, 1, 4]
    needed = _graph([helper.make_node("Expand", ["x", "shape"], ["e"]), helper.make_node("Add", ["e", "y"], ["out"])],
                    [("x", ["B", 1, 4]), ("y", [1, 1, 4])], ["B", 3, 4], [_int64("shape", [1, 3, 1])])
    model, modified, ops = _rewritten(needed)
    assert not modified and ops == ["Expand", "Add"]


def test_a_reshape_chain_back_to_its_input_shape_goes_and_one_to_another_shape_stays():
    # [B, 4, 6] -> [B*4, 6] -> [B, 4, 6]: the identity, whatever B
    back = _graph([helper.make_node("Reshape", ["x", "s1"], ["r1"]), helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
                   helper.make_node("Relu", ["r2"], ["out"])],
                  [("x", ["B", 4, 6])], ["B", 4, 6], [_int64("s1", [-1, 6]), _int64("s2", [-1, 4, 6])])
    model, modified, ops = _rewritten(back)
    assert modified and ops == ["Relu"]
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)}
    assert_close(run(model, feeds), run(back, feeds))

    # [B, 4, 6] -> [B*4, 6] -> [B, 6, 4]: the same element count, another shape
    other = _graph([helper.make_node("Reshape", ["x", "s1"], ["r1"]), helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
                    helper.make_node("Relu", ["r2"], ["out"])],
                   [("x", ["B", 4, 6])], ["B", 6, 4], [_int64("s1", [-1, 6]), _int64("s2", [-1, 6, 4])])
    _, modified, ops = _rewritten(other)
    assert not modified and ops == ["Reshape", "Reshape", "Relu"]
