"""Pruning the architecture zoo (both exporters): valid models that match the zero-at-consumers oracle."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from prune_oracle import (assert_close, prunable_heads, prune_and_check, random_inputs, random_plan, run,
                          zeroed_original)

from onnxkd.graph_passes.api import PLAN_KEY, channel_groups, prune, prune_with_plan, read_plan
from onnxkd.graph_passes.prune.compose import match_groups
from onnxkd.model import load, save, to_proto

ZOO = ["resnet", "mobilenetv2", "mobilenetv3", "mobilenetv3w", "densenet", "unet", "resnext", "shufflenetv1", "shufflenetv2", "convnext", "transformer",
       "gpt", "bert", "sdpa", "vit", "mha", "gpt2", "fusedqkv", "einsum", "llama"]
TRANSFORMERS = ["transformer", "gpt", "bert", "sdpa", "vit", "mha", "gpt2", "fusedqkv", "einsum", "llama"]
# Attention heads per block (size, head_dim): llama's 4 query heads share 2 key/value heads, cut with them
HEADS = {"llama": (2, 8)}
# MACs after / before at --ratio 0.5, a little above what the rules reach today (benchmarks/prune_coverage.py):
# a rule that regresses into freezing a group fails here, not only a test that nothing at all was pruned.
MACS_CEILING = {"resnet": 0.28, "mobilenetv2": 0.33, "mobilenetv3": 0.34, "mobilenetv3w": 0.32, "densenet": 0.29, "unet": 0.28,
                "resnext": 0.28, "shufflenetv1": 0.40, "shufflenetv2": 0.32, "convnext": 0.64, "transformer": 0.52, "gpt": 0.56, "bert": 0.52, "sdpa": 0.52, "vit": 0.56,
                "mha": 0.52, "gpt2": 0.55, "fusedqkv": 0.52, "einsum": 0.46, "llama": 0.56}


def _check_oracle(path, result, batch=2):
    prepared, groups = channel_groups(path)
    zeroed = zeroed_original(prepared, groups, result.plan)
    feeds = random_inputs(path, batch=batch)
    assert_close(run(result.model, feeds), run(zeroed, feeds))


def _check_random_plans(path, groups, rng, count=3):
    """Random, unequal plans: valid models that match the oracle (returned for further checks)."""
    results = []
    for _ in range(count):
        result = prune_with_plan(path, random_plan(groups, rng))
        onnx.checker.check_model(to_proto(result.model), full_check=True)
        _check_oracle(path, result, batch=3)
        results.append(result)
    return results


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ZOO)
def test_half_ratio_matches_oracle(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    result = prune(path, 0.5, round_to=1)
    assert result.summary["macs_after"] <= MACS_CEILING[name] * result.summary["macs_before"]
    assert result.summary["channels_after"] < result.summary["channels_before"]
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    _check_oracle(path, result, batch=3)  # batch 3: the dynamic batch axis survives
    teacher = load(path)  # same output shapes, dynamic axes included
    assert [str(v.shape) for v in result.model.graph.outputs] == [str(v.shape) for v in teacher.graph.outputs]
    assert [str(v.shape) for v in result.model.graph.inputs] == [str(v.shape) for v in teacher.graph.inputs]


@pytest.mark.parametrize("name", ["mobilenetv2", "resnext", "transformer"])
def test_default_round_to_keeps_whole_blocks_of_16_and_matches_oracle(zoo_model, name):
    """The default (round-to 16): every cut group keeps a multiple of 16 channels (heads count as their width),
    narrow groups stay whole, and the result is still the teacher with those channels zeroed."""
    path = zoo_model(name, "legacy")
    result = prune(path, 0.5)
    exact = prune(path, 0.5, round_to=1)
    _, groups = channel_groups(path)
    for group in groups:
        kept = len(result.plan.get(group.id, range(group.size)))
        step = max(1, 16 // math.gcd(16, group.outputs_per_channel), group.divisor)
        assert kept == group.size or kept % step == 0, (group.source, group.size, kept)
    assert exact.summary["macs_after"] <= result.summary["macs_after"] < result.summary["macs_before"]
    if name != "transformer":  # its widths (32, 64, heads) halve to whole blocks: rounding changes nothing there
        assert exact.summary["macs_after"] < result.summary["macs_after"]
    _check_oracle(path, result, batch=2)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_shufflenet_v2_trunk_is_cut_through_split_concat_and_shuffle(zoo_model, exporter):
    """The channels that cross units prune too: the shuffle couples the i-th channel of each concatenated half
    (they go together), and the next unit's chunk gets constant split sizes (the legacy export computes them
    from the width at run time), so each half shrinks on its own. Random, unequal plans match the oracle."""
    path = zoo_model("shufflenetv2", exporter)
    _, groups = channel_groups(path)
    assert [g.frozen for g in groups if not g.prunable] == ["graph output 'output'"]  # only the logits
    _check_random_plans(path, groups, np.random.default_rng(0))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_shufflenet_v1_balances_conv_groups_across_shuffles_and_streams(zoo_model, exporter):
    """ShuffleNet v1 (4 conv groups of 10 positions in stage 1): after the shuffle a channel's 4 copies straddle
    the next grouped conv's groups at 10 and 30; those channels stay, and everything else is cut with every conv
    group keeping as many channels as the others, `group` unchanged. Random, unequal plans match the oracle."""
    path = zoo_model("shufflenetv1", exporter)
    _, groups = channel_groups(path)
    frozen = [g.frozen for g in groups if not g.prunable]
    assert frozen.count("graph output 'output'") == 1
    assert all("a channel straddles two conv groups" in reason for reason in frozen if "graph output" not in reason)
    assert len(frozen) == 1 + 2 * 3  # the logits; 2 straddling channels in each of the 3 stage-1 units
    grouped = {n.name for n in load(path).graph if n.op_type == "Conv" and n.attributes.get("group")
               and n.attributes["group"].value == 4}
    assert len(grouped) == 10  # 2 per unit
    for result in _check_random_plans(path, groups, np.random.default_rng(1)):
        assert {n.attributes["group"].value for n in result.model.graph if n.name in grouped} == {4}


@pytest.mark.parametrize("name", ["resnet", "mobilenetv3", "transformer", "unet"])
def test_ratio_zero_is_identity(zoo_model, name):
    path = zoo_model(name, "dynamo")
    result = prune(path, 0.0)
    assert result.summary["channels_after"] == result.summary["channels_before"]
    feeds = random_inputs(path)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for actual, wanted in zip(run(result.model, feeds), expected):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("criterion", ["l2", "bn", "random"])
def test_criteria_match_oracle(zoo_model, criterion):
    path = zoo_model("mobilenetv2", "dynamo")
    result = prune(path, 0.4, criterion=criterion, seed=3, round_to=1)
    _check_oracle(path, result)


def test_global_and_round_to_match_oracle(zoo_model):
    path = zoo_model("densenet", "legacy")
    result = prune(path, 0.5, global_rank=True, round_to=4)
    _check_oracle(path, result)
    groups = {g.id: g for g in result.groups}
    for gid, kept in result.plan.items():
        assert len(kept) % 4 == 0 or len(kept) == groups[gid].size


def test_external_data_round_trip(zoo_model, tmp_path):
    path = zoo_model("resnet", "dynamo", external_data=True)
    result = prune(path, 0.5, round_to=1)
    out = save(result.model, tmp_path / "student.onnx", external_data=True)
    assert (tmp_path / "student.onnx.data").exists()
    feeds = random_inputs(path)
    stored = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close(stored, run(result.model, feeds))
    assert read_plan(out) == {k: v for k, v in result.plan.items() if len(v) < result.groups[k].size}
    assert PLAN_KEY in load(out).metadata_props


def test_attention_heads_are_pruned(zoo_model):
    """Heads: Q/K/V columns and output-projection rows go by head_dim blocks; the Reshapes follow."""
    for exporter in ("legacy", "dynamo"):
        _, groups = channel_groups(zoo_model("transformer", exporter))
        heads = [g for g in groups if g.prunable and g.channel_block == 8]
        assert len(heads) == 2, exporter  # one per block
        for g in heads:
            assert g.size == 4
            assert sum(s.role == "out" for s in g.slices) >= 3  # q, k, v weights
            assert any(s.role == "in" and s.block == 8 for s in g.slices)  # proj rows
            assert g.edits  # the Reshape shape entries
        frozen = [g for g in groups if g.frozen]
        assert any("LayerNormalization" in g.frozen or "cannot be cut" in g.frozen for g in frozen)


def test_taylor_with_gradients_keyed_by_teacher_names(zoo_model):
    """The bridge hands gradients keyed by the teacher's initializer names (untied copies map back)."""
    path = zoo_model("transformer", "legacy")
    teacher = load(path)
    rng = np.random.default_rng(0)
    gradients = {name: rng.standard_normal(value.const_value.shape.numpy()).astype(np.float32)
                 for name, value in teacher.graph.initializers.items() if value.const_value is not None}
    from onnxkd.graph_passes.prune.importance import importance

    prepared, groups = channel_groups(path)
    arrays = {n: v.const_value.numpy() for n, v in prepared.graph.initializers.items() if v.const_value is not None}
    scores = importance(groups, arrays, "taylor", gradients)
    assert scores and all(s.min() > 0 for s in scores.values())  # every weight slice found its gradient
    result = prune(path, 0.5, criterion="taylor", gradients=gradients, round_to=1)
    assert result.summary["pruned"] >= 1
    _check_oracle(path, result)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_every_attention_block_has_a_prunable_heads_group(zoo_model, name, exporter):
    """As real exporters write attention (masks broadcast over heads, the dynamo exporter's decomposed SDPA,
    packed q/k/v projections selected with Gather or split in the graph, GPT-2's Conv1D and fused c_attn):
    one group of 4 heads of 8 per block, prunable."""
    _, groups = channel_groups(zoo_model(name, exporter))
    heads = [(g.size, g.channel_block) for g in groups if g.prunable and g.channel_block > 1]
    assert heads == [HEADS.get(name, (4, 8))] * 2, [(g.source, g.size, g.channel_block, g.frozen) for g in groups]


# Token models as NLP exports have them: batch AND sequence length dynamic. The zoo's nn.MultiheadAttention is
# left out with the legacy exporter, which bakes the example's length into a Reshape: onnxruntime rejects that
# teacher itself at any other length, so freezing its heads is right.
DYNAMIC_SEQ = [(name, exporter) for name in TRANSFORMERS if name != "vit" for exporter in ("legacy", "dynamo")
               if (name, exporter) != ("mha", "legacy")]


@pytest.mark.parametrize("name, exporter", DYNAMIC_SEQ, ids=[f"{n}-{e}" for n, e in DYNAMIC_SEQ])
def test_heads_are_cut_with_a_dynamic_sequence_length(zoo_model, name, exporter):
    """Every attention block keeps its prunable heads group when the sequence length is dynamic too (shapes
    computed from it once froze them: the dynamo exporter shares one [batch, seq, heads, head_dim] Concat among
    q, k and v's Reshapes, and a positional table of 16 sliced to the sequence length did not fit the stand-in
    length), and the cut model matches the oracle at two lengths."""
    path = zoo_model(name, exporter, dynamic_seq=True)
    groups = channel_groups(path)[1]
    assert prunable_heads(path) == [HEADS.get(name, (4, 8))] * 2, [(g.source, g.size, g.frozen) for g in groups]
    result = prune_and_check(path, [{"input_ids": np.random.default_rng(n).integers(0, 50, (3, n)).astype(np.int64)}
                                    for n in (12, 7)])
    assert [str(v.shape) for v in result.model.graph.inputs] == [str(v.shape) for v in load(path).graph.inputs]


def test_class_token_and_positions_are_sliced_with_the_residual_stream(zoo_model):
    """ViT: a learned class token Expand-ed over the batch and concatenated in front of the patches is a weight
    of the residual stream; with --prune-normalized it is cut with it (it once froze the whole stream)."""
    path = zoo_model("vit", "dynamo")
    result = prune(path, 0.5, prune_normalized=True, round_to=1)
    assert result.summary["normalized_pruned"] == 1
    sizes = {name: tuple(v.const_value.shape) for name, v in result.model.graph.initializers.items()}
    assert sizes["cls"] == (1, 1, 16) and sizes["pos"] == (1, 17, 16)
    feeds = random_inputs(path, batch=3)
    assert run(result.model, feeds)[0].shape == (3, 10)


def test_pruning_steps_match_a_student_group_only_to_the_teacher_group_it_remains_of(zoo_model):
    """Iterative pruning re-analyses each student. ShuffleNet v1's balanced conv groups split one conv's channels
    into several groups with the same source and tensors (straddling channels move as widths change): such
    groups must stay unmatched, never be paired with a namesake (the plan would index the wrong channels)."""
    path = zoo_model("shufflenetv1", "legacy")
    _, teacher = channel_groups(path)
    first = prune(path, 0.3, round_to=1)
    _, student = channel_groups(first.model)
    matched = match_groups(teacher, student)
    by_id = {g.id: g for g in teacher}
    assert matched  # the unambiguous groups (the stem's) are matched
    for student_group in student:
        if student_group.id in matched:
            teacher_group = by_id[matched[student_group.id]]
            assert student_group.size == len(first.plan.get(teacher_group.id, range(teacher_group.size)))
