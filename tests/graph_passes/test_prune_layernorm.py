"""``prune_normalized``: cutting the LayerNorm'd residual stream of the zoo transformers.

The zero-at-consumers oracle does not apply (LayerNorm's mean and variance over d' kept channels are
not those over d channels, even when the removed ones are zero), so the oracle here is an independent
re-implementation: the zoo module's forward pass written with torch functionals, run on the torch
module's own weights sliced at the plan's kept indices (hidden columns, heads, MLP units). Agreement
proves the pruned ONNX graph is exactly the same architecture at the smaller widths (every coupled
weight, LayerNorm parameter, embedding and shape constant cut consistently); it proves nothing about
accuracy, which distillation has to recover. The reference is checked against the teacher at full width.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
import models
from prune_oracle import assert_close, random_inputs, run

from onnxkd.cli import main
from onnxkd.graph_passes.api import channel_groups, prune, read_plan_details
from onnxkd.graph_passes.normalize.untie import origin
from onnxkd.model import to_proto

MODELS = [("transformer", "legacy"), ("transformer", "dynamo"), ("gpt", "legacy"), ("gpt", "dynamo")]
HEAD_DIM, LAYERS = 8, 2


def build(name: str, tied: bool = False) -> torch.nn.Module:
    model = models.build(name)
    if tied:
        model.lm_head.weight = model.tok.weight
    return model


def reference(name: str, ids: np.ndarray, hidden, heads, mlp, tied: bool = False) -> np.ndarray:
    """The zoo model (tests/models.py) at widths hidden/heads/mlp: kept indices into the teacher's weights."""
    sd = {k: v.detach().double() for k, v in build(name, tied).state_dict().items()}
    ids = torch.as_tensor(ids)
    b, t = ids.shape
    hid = torch.as_tensor(hidden)

    def ln(x, prefix):
        return F.layer_norm(x, (len(hidden),), sd[prefix + ".weight"][hid], sd[prefix + ".bias"][hid], 1e-5)

    def linear(x, prefix, rows, cols, bias=True):
        w = sd[prefix + ".weight"][rows][:, cols]
        return x @ w.T + (sd[prefix + ".bias"][rows] if bias else 0)

    x = sd["tok.weight"][:, hid][ids]
    x = x + (sd["pos.weight"][:t][:, hid] if "pos.weight" in sd else sd["pos"][:, :t][..., hid])
    for i in range(LAYERS):
        p = f"blocks.{i}."
        cols = torch.as_tensor([h * HEAD_DIM + j for h in heads[i] for j in range(HEAD_DIM)])
        h = ln(x, p + "ln1")
        q, k, v = (linear(h, p + "attn." + n, cols, hid).reshape(b, t, -1, HEAD_DIM).transpose(1, 2) for n in "qkv")
        scores = q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)
        if name == "gpt":
            scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        attn = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + linear(attn, p + "attn.proj", hid, cols)
        m = torch.as_tensor(mlp[i])
        x = x + linear(F.gelu(linear(ln(x, p + "ln2"), p + "fc1", m, hid)), p + "fc2", hid, m)
    x = ln(x, "ln")
    if name == "gpt":
        return linear(x, "lm_head", slice(None), hid, bias=False).numpy()
    return linear(x.mean(1), "head", slice(None), hid).numpy()


def widths(groups, plan) -> tuple[list, list, list]:
    """Kept hidden columns, heads and MLP units per block, read off the groups by their weights' names."""
    def kept(group):
        return plan.get(group.id, list(range(group.size)))

    by_weight = {origin(s.name): g for g in groups for s in g.slices}
    stream = [g for g in groups if g.normalized]
    assert len(stream) == 1 and stream[0].size == 32
    table = next(s for s in stream[0].slices if s.name in ("tok.weight", "lm_head.weight"))  # tied: either name
    assert (table.axis, table.offset, table.block, table.role) == (1, 0, 1, "out")  # channel c = column c
    heads = [kept(by_weight[f"blocks.{i}.attn.q.bias"]) for i in range(LAYERS)]
    mlp = [kept(by_weight[f"blocks.{i}.fc1.bias"]) for i in range(LAYERS)]
    return kept(stream[0]), heads, mlp


@pytest.mark.parametrize("name,exporter", MODELS)
def test_pruned_stream_equals_the_narrow_architecture(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    assert result.summary["normalized_pruned"] == 1
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    feeds = random_inputs(path, batch=3)
    ids = next(iter(feeds.values()))
    teacher = run(path, feeds)
    full = widths(result.groups, {})
    assert_close([reference(name, ids, *full).astype(np.float32)], teacher)  # the reference is the teacher
    hidden, heads, mlp = widths(result.groups, result.plan)
    assert len(hidden) == 16 and [len(h) for h in heads] == [2, 2] and [len(m) for m in mlp] == [32, 32]
    student = run(result.model, feeds)
    assert [s.shape for s in student] == [t.shape for t in teacher]
    assert_close(student, [reference(name, ids, hidden, heads, mlp).astype(np.float32)])
    stored = [g for g in read_plan_details(result.model)["groups"] if g.get("normalized")]
    assert len(stored) == 1 and stored[0]["kept"] == hidden


def test_layer_norm_written_out_cuts_the_stream_as_the_op_does(tmp_path):
    """The zoo transformer exported at opset 14, as Hugging Face's exporters long wrote BERTs: every LayerNorm
    written out (ReduceMean, Sub, Pow, Sqrt, Div). The cut model equals the narrow architecture, as at opset 17."""
    path = tmp_path / "transformer-opset14.onnx"
    example = models.ZOO["transformer"].example_input(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build("transformer"), (example,), str(path), dynamo=False, opset_version=14,
                          input_names=["input_ids"], output_names=["output"],
                          dynamic_axes={"input_ids": {0: "batch"}, "output": {0: "batch"}})
    assert "LayerNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    assert result.summary["normalized_pruned"] == 1
    feeds = random_inputs(path, batch=3)
    ids = next(iter(feeds.values()))
    hidden, heads, mlp = widths(result.groups, result.plan)
    assert len(hidden) == 16
    assert_close(run(result.model, feeds), [reference("transformer", ids, hidden, heads, mlp).astype(np.float32)])


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_tied_lm_head(tmp_path, exporter):
    """GPT with lm_head.weight = tok.weight: the exporters write the head as a transposed copy; its rows
    are cut with the embedding's columns."""
    path = tmp_path / "tied.onnx"
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(build("gpt", tied=True), (ids,), str(path), dynamo=False, opset_version=17,
                              input_names=["input_ids"], output_names=["output"])
        else:
            torch.onnx.export(build("gpt", tied=True), (ids,), dynamo=True, input_names=["input_ids"],
                              output_names=["output"], verbose=False).save(str(path))
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    hidden, heads, mlp = widths(result.groups, result.plan)
    assert len(hidden) == 16
    feeds = random_inputs(path)
    assert_close(run(result.model, feeds), [reference("gpt", feeds["input_ids"], hidden, heads, mlp, tied=True)
                                            .astype(np.float32)])


def test_ratio_zero_with_opt_in_is_identity(zoo_model):
    path = zoo_model("gpt", "legacy")  # the legacy export reads the hidden size with Shape
    result = prune(path, 0.0, prune_normalized=True)
    assert result.summary["channels_after"] == result.summary["channels_before"]
    feeds = random_inputs(path)
    for actual, wanted in zip(run(result.model, feeds), run(path, feeds)):
        np.testing.assert_array_equal(actual, wanted)


def test_without_opt_in_the_stream_stays_whole(zoo_model):
    _, groups = channel_groups(zoo_model("transformer", "legacy"))
    assert not any(g.normalized for g in groups)
    _, groups = channel_groups(zoo_model("transformer", "legacy"), prune_normalized=True)
    assert [g.prunable for g in groups if g.normalized] == [True]


def _ln_model(to_output: bool, op: str = "LayerNormalization") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    params = ["g", "b"] if op == "LayerNormalization" else ["g"]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node(op, ["h", *params], ["n"], name="ln", axis=-1)]
    out = "n"
    if not to_output:
        nodes.append(helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"))
        out = "y"
    inits = {"w1": rng.standard_normal((6, 8)), "g": rng.uniform(0.5, 1.5, 8), "b": rng.standard_normal(8),
             "w2": rng.standard_normal((8, 3))}
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17 if op == "LayerNormalization" else 23)])


@pytest.mark.parametrize("op", ["LayerNormalization", "RMSNormalization"])
def test_small_graph_matches_numpy_layer_norm_on_kept_channels(op):
    """x @ w1 -> LayerNorm (RMSNorm) -> @ w2: the student normalises over the kept columns only (numpy)."""
    model = _ln_model(to_output=False, op=op)
    result = prune(model, 0.5, prune_normalized=True, round_to=1)
    (group,) = [g for g in result.groups if g.normalized]
    kept = result.plan[group.id]
    assert len(kept) == 4
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    h = x @ inits["w1"][:, kept]
    if op == "LayerNormalization":
        n = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * inits["g"][kept] + inits["b"][kept]
    else:
        n = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-5) * inits["g"][kept]
    assert_close(run(result.model, {"x": x}), [n @ inits["w2"][kept]])


class Normed(torch.nn.Module):
    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.up, self.norm, self.down = torch.nn.Linear(6, 16), norm, torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.down(self.norm(self.up(x)))


def _numpy_norm(kind: str, h: np.ndarray, weights: dict, kept) -> np.ndarray:
    if kind == "rms":
        return h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-6) * weights["norm.weight"][kept]
    centred = h - h.mean(-1, keepdims=True)
    return centred / np.sqrt(centred.var(-1, keepdims=True) + 1e-5) * weights["norm.weight"][kept] + weights["norm.bias"][kept]


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norms_written_out_are_cut_as_layer_normalization_is(tmp_path, kind):
    """RMSNorm, and LayerNorm exported at opset 14 (both written out: ReduceMean of the square, or x minus its
    ReduceMean): with the opt-in the student normalises over its kept channels (numpy on the sliced weights);
    without it, the reason names the flag."""
    torch.manual_seed(0)
    module = Normed(models.RMSNorm(16) if kind == "rms" else torch.nn.LayerNorm(16)).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 5, 6),), str(path), dynamo=False, opset_version=14,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    assert "LayerNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    [whole] = channel_groups(path)[1][:1]
    assert whole.frozen and "--prune-normalized" in whole.frozen
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    (group,) = [g for g in result.groups if g.normalized]
    kept = result.plan[group.id]
    assert len(kept) == 8
    weights = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    x = np.random.default_rng(1).standard_normal((3, 5, 6)).astype(np.float32)
    h = x @ weights["up.weight"][kept].T + weights["up.bias"][kept]
    expected = _numpy_norm(kind, h, weights, kept) @ weights["down.weight"][:, kept].T + weights["down.bias"]
    assert_close(run(result.model, {"x": x}), [expected.astype(np.float32)])


def test_a_mean_over_channels_that_is_not_a_norm_stays_whole(tmp_path):
    """A channel mean that nothing is centred by, and not of a square (a pooled feature), keeps its channels."""

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(6, 16)

        def forward(self, x):
            h = self.up(x)
            return h * h.mean(-1, keepdim=True)

    path = tmp_path / "m.onnx"
    torch.onnx.export(Pooled().eval(), (torch.randn(2, 6),), str(path), dynamo=False, opset_version=14,
                      input_names=["x"], output_names=["y"])
    [group] = channel_groups(path, prune_normalized=True)[1]
    assert group.frozen and "reduced over the channel axis" in group.frozen


def test_layer_norm_at_a_graph_output_stays_frozen():
    result = prune(_ln_model(to_output=True), 0.5, prune_normalized=True, round_to=1)
    (group,) = [g for g in result.groups if g.normalized]
    assert group.frozen and "graph output" in group.frozen


def test_cli_flag_and_recipe_key(zoo_model, tmp_path, capsys):
    path = zoo_model("transformer", "dynamo")
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"prune": {"prune_normalized": true}}')
    for extra in (["--prune-normalized"], ["--recipe", str(recipe)], []):
        out = tmp_path / "small.onnx"
        main(["prune", str(path), "--ratio", "0.5", "-o", str(out), "--json", *extra])
        stored = read_plan_details(out)["groups"]
        assert any(g.get("normalized") for g in stored) == bool(extra)
        assert "summary" in capsys.readouterr().out


def convnext_reference(x: np.ndarray, streams: tuple[list, list], hidden: list[list]) -> np.ndarray:
    """tests/models.py's ConvNeXtTiny written with torch functionals, at stream widths ``streams`` (stage 1,
    stage 2) and MLP widths ``hidden`` (one per block): kept indices into the teacher's weights."""
    sd = {k: v.detach().double() for k, v in build("convnext").state_dict().items()}
    s1, s2 = (torch.as_tensor(s) for s in streams)

    def ln_channels_last(y, prefix, keep):
        return F.layer_norm(y, (len(keep),), sd[prefix + ".weight"][keep], sd[prefix + ".bias"][keep], 1e-6)

    def ln2d(y, prefix, keep):
        return ln_channels_last(y.permute(0, 2, 3, 1), prefix, keep).permute(0, 3, 1, 2)

    def block(y, p, keep, units):
        units = torch.as_tensor(units)
        z = F.conv2d(y, sd[p + "dw.weight"][keep], sd[p + "dw.bias"][keep], padding=3, groups=len(keep))
        z = ln_channels_last(z.permute(0, 2, 3, 1), p + "norm", keep)
        z = F.gelu(z @ sd[p + "fc1.weight"][units][:, keep].T + sd[p + "fc1.bias"][units])
        z = z @ sd[p + "fc2.weight"][keep][:, units].T + sd[p + "fc2.bias"][keep]
        return y + (sd[p + "gamma"][keep] * z).permute(0, 3, 1, 2)

    y = F.conv2d(torch.as_tensor(x).double(), sd["stem.0.weight"][s1], sd["stem.0.bias"][s1], stride=4)
    y = ln2d(y, "stem.1", s1)
    for i in range(2):
        y = block(y, f"stage1.{i}.", s1, hidden[i])
    y = F.conv2d(ln2d(y, "down.0", s1), sd["down.1.weight"][s2][:, s1], sd["down.1.bias"][s2], stride=2)
    for i in range(2):
        y = block(y, f"stage2.{i}.", s2, hidden[2 + i])
    y = ln_channels_last(y.mean((2, 3)), "norm", s2)
    return (y @ sd["fc.weight"][:, s2].T + sd["fc.bias"]).numpy()


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_convnext_pruned_streams_equal_the_narrow_network(zoo_model, exporter):
    """ConvNeXt's residual streams are LayerNorm'd over the channels of NCHW (permute, normalise, permute back)
    and channels-last inside the blocks; with the opt-in both streams and every MLP width are cut, and the
    student is the same network at the smaller widths."""
    path = zoo_model("convnext", exporter)
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    assert result.summary["normalized_pruned"] == 2
    assert result.summary["macs_after"] <= 0.31 * result.summary["macs_before"]
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    group_of = {origin(s.name): g for g in result.groups for s in g.slices}

    def kept(weight, plan):
        group = group_of[weight]
        return plan.get(group.id, list(range(group.size)))

    def widths(plan):
        blocks = [f"stage{s}.{i}." for s in (1, 2) for i in range(2)]
        return (kept("stage1.0.dw.bias", plan), kept("down.1.bias", plan)), [kept(b + "fc1.bias", plan) for b in blocks]

    feeds = random_inputs(path, batch=3)
    x = next(iter(feeds.values()))
    assert_close([convnext_reference(x, *widths({})).astype(np.float32)], run(path, feeds))  # the reference is the teacher
    streams, hidden = widths(result.plan)
    assert [len(s) for s in streams] == [12, 24] and [len(h) for h in hidden] == [48, 48, 96, 96]
    assert_close(run(result.model, feeds), [convnext_reference(x, streams, hidden).astype(np.float32)])
