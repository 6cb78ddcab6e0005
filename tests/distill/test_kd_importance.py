"""The `kd` criterion: mask gradients checked against an explicit mask in the graph, scores that are
not zero where the KD loss gradient is, `prune --criterion kd`, and iterative pruning's plan composition."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

import onnxkd
from onnxkd.data import as_dataset, fit_to_model, input_specs, load_npz
from onnxkd.distill import hints as hint_rules
from onnxkd.distill.config import DistillConfig
from onnxkd.distill.importance import kd_scores
from onnxkd.distill.iterative import iterative_prune
from onnxkd.graph_passes.api import channel_groups, prune_with_plan, read_plan, read_plan_details
from onnxkd.graph_passes.prune.importance import channel_sums


@pytest.fixture(scope="module")
def digits_data(digits):
    teacher = onnx.load(str(digits["teacher"]))
    return fit_to_model(load_npz(digits["train"]), input_specs(teacher)).take(np.arange(256))


def _with_mask(path, tensor: str, channels: int) -> onnx.ModelProto:
    """The model with ``tensor`` multiplied by a [1, C, 1, 1] mask of ones before anything reads it."""
    model = onnx.load(str(path))
    masked = tensor + "_masked"
    for node in model.graph.node:
        node.input[:] = [masked if name == tensor else name for name in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, channels, 1, 1), np.float32), "mask"))
    model.graph.node.append(helper.make_node("Mul", [tensor, "mask"], [masked]))
    return model


def test_channel_sums_are_the_gradient_of_a_mask_on_the_channel(digits, digits_data):
    """sum of w * dL/dw over a group's coupled weights == dL/dmask for an explicit mask on its channels
    (twice: once from the producer's rows, once from the consumer's columns, through the ReLU)."""
    prepared, groups = channel_groups(digits["teacher"])
    group = groups[0]
    relu = next(m.tensor for m in group.members if m.tensor.endswith("Relu_output_0"))
    plain, masked = onnxkd.to_torch(prepared).eval(), onnxkd.to_torch(_with_mask(digits["teacher"], relu, group.size)).eval()
    x = torch.from_numpy(digits_data.arrays["image"][:32])
    labels = torch.from_numpy(digits_data.labels[:32])

    named = list(plain.onnx_parameters())
    grads = torch.autograd.grad(F.cross_entropy(plain(x)[0], labels, reduction="sum"), [p for _, p in named])
    gradients = {name: g.numpy() for (name, _), g in zip(named, grads)}
    arrays = {name: p.detach().numpy() for name, p in named}
    mask = masked.parameter("mask")
    (mask_grad,) = torch.autograd.grad(F.cross_entropy(masked(x)[0], labels, reduction="sum"), [mask])
    np.testing.assert_allclose(channel_sums(group, arrays, gradients), 2 * mask_grad.reshape(-1).numpy(),
                               rtol=1e-3, atol=1e-4)


def test_kd_scores_are_informative_where_the_kd_gradient_is_zero(digits, digits_data):
    scores = kd_scores(digits["teacher"], digits_data, max_samples=128)
    _, groups = channel_groups(digits["teacher"])
    assert set(scores) == {g.id for g in groups if g.prunable}
    for group in groups:
        if group.prunable:
            assert scores[group.id].shape == (group.size,) and np.isfinite(scores[group.id]).all()
            assert (scores[group.id] > 0).mean() > 0.5  # not the zero a KD-loss gradient gives at student == teacher
    from onnxkd.distill import losses

    module = onnxkd.to_torch(digits["teacher"]).eval()
    x = torch.from_numpy(digits_data.arrays["image"][:32])
    logits = module(x)[0]
    kd = losses.kd_kl(logits, logits.detach(), 4.0)
    grads = torch.autograd.grad(kd, list(module.parameters()))
    assert max(float(g.abs().max()) for g in grads) < 1e-6
    assert kd_scores(digits["teacher"], digits_data, max_samples=64, seed=1)[0].tolist() != \
        kd_scores(digits["teacher"], digits_data, max_samples=64, seed=2)[0].tolist()  # labels are sampled


def test_prune_cli_with_kd(digits, tmp_path):
    from click.testing import CliRunner

    from onnxkd.cli import cli

    out = tmp_path / "kd.onnx"
    result = CliRunner().invoke(cli, ["prune", str(digits["teacher"]), "--ratio", "0.5", "--criterion", "kd",
                                      "--data", str(digits["train"]), "--max-batches", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_plan(out) and read_plan(out) != onnxkd.prune(digits["teacher"], 0.5).plan
    missing = CliRunner().invoke(cli, ["prune", str(digits["teacher"]), "--ratio", "0.5", "--criterion", "kd",
                                       "-o", str(tmp_path / "x.onnx")])
    assert isinstance(missing.exception, onnxkd.OnnxkdError) and "needs --data" in str(missing.exception)


@pytest.mark.parametrize("criterion", ["l1", "kd"])
def test_iterative_steps_compose_to_a_plan_over_the_teachers_channels(digits, digits_data, criterion):
    """Without distillation between steps, K steps must give exactly the teacher pruned with the composed
    plan (pruning only slices), with the same channel counts as one-shot pruning."""
    result = iterative_prune(digits["teacher"], 0.5, 3, digits_data, criterion=criterion)
    reference = prune_with_plan(digits["teacher"], result.plan).model
    got = {n: v.const_value.numpy() for n, v in result.model.graph.initializers.items()}
    expected = {n: v.const_value.numpy() for n, v in reference.graph.initializers.items()}
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    sizes = {g.id: g.size for g in channel_groups(digits["teacher"])[1]}
    one_shot = {g: len(k) for g, k in onnxkd.prune(digits["teacher"], 0.5).plan.items() if len(k) < sizes[g]}
    assert {g: len(k) for g, k in result.plan.items()} == one_shot
    assert read_plan(result.model) == result.plan
    channels = [s["channels"] for s in result.steps]
    assert channels == sorted(channels, reverse=True) and len(set(channels)) == 3


def test_iterative_with_distillation_keeps_hints_aligned_with_the_teacher(digits, digits_data):
    val = digits_data.take(np.arange(200, 256))
    train = digits_data.take(np.arange(200))
    config = DistillConfig(epochs=1, batch_size=32)
    result = iterative_prune(digits["teacher"], 0.5, 2, train, val_data=val, config=config)
    assert result.steps[0]["best"]["agreement"] is not None and "best" not in result.steps[1]
    details = read_plan_details(result.model)
    teacher_model = onnxkd.load(digits["teacher"])
    [hint] = hint_rules.resolve(["auto"], teacher_model, result.model, details)[:1]
    teacher_module, student_module = onnxkd.to_torch(teacher_model), onnxkd.to_torch(result.model)
    x = torch.from_numpy(val.arrays["image"][:4])
    _, t = teacher_module(x, capture=[hint.tensor])
    _, s = student_module(x, capture=[hint.tensor])
    hint.fit(t[hint.tensor], s[hint.tensor])  # raises if the composed plan did not map to the teacher's channels
    assert hint.select(t[hint.tensor]).shape == s[hint.tensor].shape


class KerasStyle(torch.nn.Module):
    """NHWC input, a flatten through Shape/Gather/Concat/Reshape, a Softmax head: as tf2onnx writes Keras models."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return torch.softmax(self.fc(x.reshape(x.size(0), -1)), -1)


def test_kd_scores_against_a_teacher_whose_logits_are_named_otherwise(tmp_path):
    """At opset 11 a Softmax of unknown rank is upgraded to Flatten -> Softmax -> Reshape, so the logits kd
    compares are a tensor the raw teacher does not have (iterative pruning's second step died with a
    KeyError). The oracle: the same scores against the teacher normalised as the student is."""
    torch.manual_seed(0)
    path = tmp_path / "keras11.onnx"
    torch.onnx.export(KerasStyle().eval(), (torch.randn(2, 8, 8, 1),), str(path), dynamo=False, opset_version=11,
                      input_names=["input_1:0"], output_names=["dense/Softmax:0"],
                      dynamic_axes={"input_1:0": {0: "unk__12"}, "dense/Softmax:0": {0: "unk__12"}})
    normalised_teacher = channel_groups(path)[0]
    softmax = next(n for n in normalised_teacher.graph if n.op_type == "Softmax")
    assert softmax.inputs[0].name not in {v.name for n in onnxkd.load(path).graph for v in n.outputs}
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 1), dtype=np.float32)
    data = as_dataset({"input_1:0": x}, input_specs(onnx.load(str(path))))
    student = onnxkd.prune(path, 0.5, criterion="l1").model
    got = kd_scores(student, data, teacher=path)
    expected = kd_scores(student, data, teacher=normalised_teacher)
    assert got.keys() == expected.keys() and got
    for gid in got:
        np.testing.assert_allclose(got[gid], expected[gid], rtol=1e-5, err_msg=str(gid))


def test_kd_scores_take_data_as_the_commands_do(digits, digits_data):
    """A path or (x, y), as --data and the API's data= take it (only a Dataset was read: AttributeError)."""
    from onnxkd.data import load_npz

    expected = kd_scores(digits["teacher"], digits_data.take(np.arange(32)))
    raw = load_npz(digits["train"])
    x, y = (np.asarray(raw.arrays["image"][:256]), np.asarray(raw.labels[:256]))
    for given in (digits["train"], (x, y)):
        got = kd_scores(digits["teacher"], given, max_samples=32)
        assert got.keys() == expected.keys()
        for gid in got:
            np.testing.assert_allclose(got[gid], expected[gid], rtol=1e-5)
