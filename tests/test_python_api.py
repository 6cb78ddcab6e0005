"""The Python API as a script or notebook uses it: results that stay as they were returned, the caller's global
state (logging, random streams) left alone, option types checked like the CLI's, dotted names that resolve."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import onnxkd

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
TEACHER = DIGITS / "teacher.onnx"


def _small_data(n: int = 64) -> dict:
    with np.load(DIGITS / "train.npz") as train:
        return {"image": train["image"][:n], "labels": train["labels"][:n]}


def test_to_torch_runs_as_onnxruntime_does_from_the_first_call():
    """In eval mode: the README's `logits, = module(images)` right after to_torch."""
    module = onnxkd.to_torch(TEACHER)
    assert not module.training
    x = _small_data(8)["image"]
    expected = ort.InferenceSession(str(TEACHER), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x))[0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_a_written_back_model_stays_as_it_was_when_training_goes_on(tmp_path):
    """Its initializers shared memory with the module's parameters: a 'best epoch' snapshot followed training."""
    module = onnxkd.to_torch(TEACHER).train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.from_numpy(_small_data(16)["image"])

    def step():
        optimizer.zero_grad()
        module(x)[0].square().mean().backward()
        optimizer.step()

    step()  # trained weights: written back from the module's parameters (unchanged ones stay the file's)
    snapshot = onnxkd.write_back(module, TEACHER)
    before = {n: v.const_value.numpy().copy() for n, v in snapshot.graph.initializers.items()}
    step()
    after = {n: v.const_value.numpy() for n, v in snapshot.graph.initializers.items()}
    assert all(np.array_equal(before[n], after[n]) for n in before)
    assert not all(torch.equal(p.detach(), torch.from_numpy(before[n])) for n, p in module.onnx_parameters())


def test_distill_and_quantize_leave_the_callers_random_streams_and_logging_alone(tmp_path):
    root = logging.getLogger()
    level = root.level
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    data = _small_data()
    onnxkd.distill(TEACHER, onnxkd.prune(TEACHER, 0.5).model, data, epochs=1, batch_size=32)
    onnxkd.quantize(TEACHER, data, calibration_samples=16, eval_samples=16)
    assert torch.equal(torch.rand(3), expected)  # distill seeded the global generator with its own seed
    assert root.level == level  # quantize left the root logger at ERROR: the caller's warnings vanished


def test_options_are_read_as_the_cli_reads_them():
    from onnxkd.distill.config import DistillConfig

    assert DistillConfig(hints="auto").hints == ["auto"]  # not ['a', 'u', 't', 'o']
    assert DistillConfig(loss="mse").loss == {"*": "mse"}
    with pytest.raises(onnxkd.OnnxkdError, match="--loss logits=foo: choose kl, mse or cosine"):
        DistillConfig(loss={"logits": "foo"})
    for bad, message in ((dict(max_accuracy_drop="0.01"), "expected a number, got str"),
                         (dict(min_agreement=1.5), "must be in \\[0, 1\\]"),
                         (dict(min_speedup=-2), "must be >= 0"),
                         (dict(max_accuracy_drop=float("nan")), "must be in")):
        with pytest.raises(onnxkd.OnnxkdError, match=message):
            onnxkd.validate(TEACHER, TEACHER, **bad)
    with pytest.raises(onnxkd.OnnxkdError, match="--ratio '0.5': expected a number"):
        onnxkd.prune(TEACHER, "0.5")
    with pytest.raises(onnxkd.OnnxkdError, match="--ignore \\['conv1'\\]: expected one regular expression"):
        onnxkd.prune(TEACHER, 0.5, ignore=["conv1"])  # a TypeError from re before
    with pytest.raises(onnxkd.OnnxkdError, match="save: expected an onnx_ir.Model or onnx.ModelProto, got int"):
        onnxkd.save(3, "x.onnx")
    with pytest.raises(onnxkd.OnnxkdError, match="write_back: expected the module onnxkd.to_torch made, got object"):
        onnxkd.write_back(object(), TEACHER)


def test_dotted_names_resolve_after_import_onnxkd_alone():
    import subprocess
    import sys

    code = ("import onnxkd; onnxkd.report.write_report; onnxkd.pipeline.FLAT_OPTIONS; "
            "onnxkd.distill.importance.kd_scores; onnxkd.distill.iterative.iterative_prune; "
            "assert callable(onnxkd.distill) and callable(onnxkd.validate)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        onnxkd.no_such_thing


def test_a_validation_result_shows_in_one_line():
    result = onnxkd.validate(TEACHER, TEACHER, _small_data(32), runs=2, warmup=0)
    shown = repr(result)
    assert shown.startswith("ValidationResult(passed=True") and "\n" not in shown and len(shown) < 200
