"""BatchNorm recalibration against statistics computed with numpy from onnxruntime's tensors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxkd
from onnxkd.data import Dataset
from onnxkd.distill import batchnorm
from onnxkd.distill.loader import in_order
from onnxkd.distill.distributed import World
from onnxkd.distill.evaluate import score

from ort_oracle import ort_outputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402


@pytest.fixture(scope="module")
def pruned_with_batchnorm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bn")
    teacher = models.export("resnet", folder, "legacy", keep_batchnorm=True)
    pruned = folder / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5).model, pruned)
    return teacher, pruned


def test_first_batchnorm_gets_the_exact_mean_and_unbiased_variance_of_its_input(pruned_with_batchnorm, tmp_path):
    _, pruned = pruned_with_batchnorm
    model = onnxkd.load(pruned)
    nodes = batchnorm.batchnorm_nodes(model)
    assert len(nodes) == 10
    first = nodes[0]  # the stem's: its input is a conv of the (uncut) image, whatever the BN statistics
    x = np.random.default_rng(0).standard_normal((100, 3, 32, 32)).astype(np.float32)

    exposed = onnx.load(str(pruned))
    exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(first.input))
    onnx.save(exposed, str(tmp_path / "exposed.onnx"))
    feature = ort_outputs(tmp_path / "exposed.onnx", {"input": x})[1].astype(np.float64)

    module = onnxkd.to_torch(pruned).eval()
    before = {n.var: module.onnx_tensor(n.var).clone() for n in nodes}
    # uneven batches (32, 32, 32, 4): the statistics must be pooled exactly, not averaged per batch
    samples = batchnorm.recalibrate(module, model, in_order(Dataset({"input": x}), ["input"], 32, "cpu"), World())
    assert samples == 100
    np.testing.assert_allclose(module.onnx_tensor(first.mean).numpy(), feature.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module.onnx_tensor(first.var).numpy(), feature.var((0, 2, 3), ddof=1), rtol=1e-5)
    for node in nodes:
        var = module.onnx_tensor(node.var)
        assert np.isfinite(var.numpy()).all() and not np.allclose(var.numpy(), before[node.var].numpy())
    assert not module.training  # the module's mode is restored


def test_distill_recalibrates_and_reports_before_and_after(pruned_with_batchnorm, tmp_path):
    teacher, pruned = pruned_with_batchnorm
    rng = np.random.default_rng(1)
    data = {"input": rng.standard_normal((96, 3, 32, 32)).astype(np.float32)}
    result = onnxkd.distill(teacher, pruned, data, tmp_path / "s.onnx", steps=2, batch_size=32, bn_samples=64)
    assert result.recalibration["samples"] == 64 and result.recalibration["layers"] == 10
    for figures in (result.recalibration["before"], result.recalibration["after"]):
        assert 0 <= figures["agreement"] <= 1 and figures["n"] == result.data["val"]["n"] == 10
    skipped = onnxkd.distill(teacher, pruned, data, tmp_path / "s2.onnx", steps=1, batch_size=32,
                             recalibrate_bn=False)
    assert skipped.recalibration is None


def test_statistics_that_validate_worse_than_the_pruned_ones_are_not_kept(pruned_with_batchnorm, tmp_path,
                                                                          monkeypatch):
    """Data unlike what the teacher's statistics describe can make recalibration ruin the student (a user's
    teacher went from 93% to 7%): simulated by statistics 10^4 times too wide; the pruned ones must stay."""
    teacher, pruned = pruned_with_batchnorm
    real = batchnorm.recalibrate

    def ruinous(module, model, *args, **kwargs):
        samples = real(module, model, *args, **kwargs)
        for node in batchnorm.batchnorm_nodes(model):
            module.onnx_tensor(node.var).mul_(1e4)
        return samples

    monkeypatch.setattr(batchnorm, "recalibrate", ruinous)
    data = {"input": np.random.default_rng(1).standard_normal((96, 3, 32, 32)).astype(np.float32)}
    result = onnxkd.distill(teacher, pruned, data, tmp_path / "s.onnx", steps=1, batch_size=32, bn_samples=64)
    recalibration = result.recalibration
    assert recalibration["kept"] is False and score(recalibration["after"]) < score(recalibration["before"])
    assert result.initial == recalibration["before"]  # training started from the pruned statistics
    assert score(result.best) >= score(recalibration["before"])


def test_statistics_an_exporter_shared_with_biases_are_untied_and_trainable(tmp_path):
    """An untrained net exported without folding: the legacy exporter deduplicates equal tensors, so one
    zero tensor is every BN's bias AND running mean. The pruned student gives each BN its own statistics
    (never shared with a weight or another layer), so it trains, and the oracle still holds."""
    import warnings

    import torch

    native = models.ResNetTiny(width=16).eval()  # fresh BN: bias == running_mean == 0, weight == var == 1
    teacher = tmp_path / "dedup.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(native, (torch.zeros(2, 3, 32, 32),), str(teacher), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5).model, pruned)
    model = onnxkd.load(pruned)
    statistics = [(n.inputs[3], n.inputs[4]) for n in model.graph if n.op_type == "BatchNormalization"]
    for mean, var in statistics:
        for value in (mean, var):
            assert [(u.node.op_type, u.idx) for u in value.uses()] in ([("BatchNormalization", 3)],
                                                                      [("BatchNormalization", 4)])
    data = {"input": np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)}
    result = onnxkd.distill(teacher, pruned, data, tmp_path / "s.onnx", steps=2, batch_size=32)
    assert result.steps == 2 and result.recalibration["layers"] == len(statistics)
