"""The Python API: the objective's weighted sum, Softmax heads, data-free runs, the cache, the result."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnxkd
from onnxkd.distill import losses
from onnxkd.distill.objective import Objective
from onnxkd.distill.targets import Target

from ort_oracle import ort_outputs


def test_objective_is_the_weighted_sum_of_each_outputs_loss_ce_and_hints():
    torch.manual_seed(0)
    s = {"logits": torch.randn(4, 5), "map": torch.randn(4, 2, 3), "feat": torch.randn(4, 6)}
    t = {"logits": torch.randn(4, 5), "map": torch.randn(4, 2, 3), "feat": torch.randn(4, 6)}
    labels = torch.tensor([0, 1, 2, 3])
    targets = [Target("probs", "logits", "kl", 2.0, True), Target("map", "map", "cosine", 0.5, False)]
    objective = Objective(targets, ["feat"], temperature=3.0, alpha=0.25, hint_weight=0.7)
    total, parts = objective(s, t, labels)
    expected = (2.0 * (0.25 * losses.kd_kl(s["logits"], t["logits"], 3.0) + 0.75 * F.cross_entropy(s["logits"], labels))
                + 0.5 * losses.cosine(s["map"], t["map"]) + 0.7 * losses.hint(s["feat"], t["feat"]))
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert set(parts) == {"kl:probs", "ce", "cosine:map", "hint"}
    assert objective.capture == ["logits", "feat"]  # logits behind a Softmax and hints are captured
    unlabelled, _ = objective(s, t, None)  # no labels: KD alone on the class scores
    assert float(unlabelled) == pytest.approx(float(expected - 2.0 * 0.75 * F.cross_entropy(s["logits"], labels)
                                                    - 2.0 * 0.25 * losses.kd_kl(s["logits"], t["logits"], 3.0)
                                                    + 2.0 * losses.kd_kl(s["logits"], t["logits"], 3.0)), rel=1e-6)


class SoftmaxHead(nn.Module):
    """Exported classifiers often end in a Softmax (PaddlePaddle's always do)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return torch.softmax(self.fc(self.body(x)), dim=1)


def test_softmax_outputs_are_distilled_on_their_logits(digits, small_digits, tmp_path):
    teacher = tmp_path / "softmax.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        torch.onnx.export(SoftmaxHead().eval(), (torch.zeros(2, 1, 8, 8),), str(teacher), dynamo=False,
                          input_names=["image"], output_names=["probs"], dynamic_axes={"image": {0: "b"}})
    pruned = tmp_path / "pruned.onnx"
    onnxkd.save(onnxkd.prune(teacher, 0.5).model, pruned)
    result = onnxkd.distill(teacher, pruned, small_digits["train"], tmp_path / "s.onnx", val_data=small_digits["val"],
                            epochs=2)
    [target] = result.targets
    assert target["output"] == "probs" and target["tensor"] != "probs" and target["loss"] == "kl"
    probs = ort_outputs(tmp_path / "s.onnx", {"image": np.load(small_digits["val"])["image"]})[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # still a Softmax model


def test_data_free_run_warns_and_still_writes_a_valid_student(digits, digits_student, tmp_path):
    events = []
    result = onnxkd.distill(digits["teacher"], digits_student, None, tmp_path / "s.onnx", epochs=1,
                            data_free_samples=128, progress=events.append)
    assert result.data["data_free"] and result.data["train"]["n"] == 128 and result.data["val"]["n"] == 64
    assert any("data-free" in w for w in result.warnings)
    assert any(e["event"] == "line" and "data-free" in e["text"] for e in events)
    logits = ort_outputs(tmp_path / "s.onnx", {"image": np.zeros((2, 1, 8, 8), np.float32)})[0]
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_result_serialises_and_describes_the_run(digits, digits_student, small_digits, tmp_path):
    result = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "s.onnx", epochs=2,
                            hints=["auto"])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["output"] == str(tmp_path / "s.onnx") and data["epochs"] == 2 and len(data["history"]) == 2
    assert data["data"]["val"]["held_out"] and data["data"]["val"]["n"] == 30 and data["data"]["train"]["n"] == 270
    assert data["best_epoch"] in (1, 2) and data["best"] == data["history"][data["best_epoch"] - 1]["val"]
    assert data["samples_per_s"] > 0 and data["steps"] == 2 * -(-270 // 64)
    assert len(data["hints"]) >= 2 and data["config"]["hints"] == ["auto"]
    assert onnxkd.distill is not None and callable(onnxkd.distill)


def test_compiled_student_trains_like_the_eager_one(digits, digits_student, small_digits, tmp_path):
    common = dict(val_data=small_digits["val"], steps=3, batch_size=32, optimizer="sgd", lr=0.01, seed=2)
    eager = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], None, **common)
    compiled = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], None, compile=True,
                              compile_backend="aot_eager", **common)
    a = {n: v.const_value.numpy() for n, v in eager.model.graph.initializers.items()}
    b = {n: v.const_value.numpy() for n, v in compiled.model.graph.initializers.items()}
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_image_folder_data(digits, digits_student, tmp_path):
    """--data DIR/<class>/*.png, with the same preprocessing options as onnxkd validate."""
    from PIL import Image

    from onnxkd.data import ImageOptions

    train = np.load(digits["train"])
    for index in range(40):
        folder = tmp_path / "images" / str(int(train["labels"][index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((train["image"][index, 0] * 255).astype(np.uint8)).save(folder / f"{index}.png")
    result = onnxkd.distill(digits["teacher"], digits_student, tmp_path / "images", None, steps=1, batch_size=16,
                            image_options=ImageOptions(mean=(0.0,), std=(1.0,)))
    assert result.data["train"]["labels"] and result.data["train"]["n"] + result.data["val"]["n"] == 40


def test_epochs_report_the_share_of_time_spent_waiting_for_data(digits, digits_student, small_digits, tmp_path,
                                                                 monkeypatch):
    """A slow source (40 ms a batch, far more than a step of this small student) must show as waiting; the
    usual in-memory one as almost none."""
    import time

    from onnxkd.distill.batches import Batches

    fast = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "fast.onnx", epochs=1)
    real_epoch = Batches.epoch

    def slow_epoch(self, epoch, start=0):
        for batch in real_epoch(self, epoch, start):
            time.sleep(0.04)
            yield batch

    monkeypatch.setattr(Batches, "epoch", slow_epoch)
    slow = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "slow.onnx", epochs=1)
    assert slow.history[0]["data_wait"] > 0.5 > fast.history[0]["data_wait"] >= 0


def test_training_that_only_hurts_leaves_the_student_as_it_was(digits, small_digits, tmp_path):
    """The unpruned teacher as its own student, trained at a learning rate that wrecks it: no epoch scores as
    well as the start, so the weights written are the student's own (onnxruntime gives the teacher's outputs
    exactly) and the run says why."""
    out = tmp_path / "s.onnx"
    result = onnxkd.distill(digits["teacher"], digits["teacher"], small_digits["train"], out,
                            val_data=small_digits["val"], epochs=2, optimizer="sgd", lr=50.0, recalibrate_bn=False)
    assert [h["val"]["accuracy"] < result.initial["accuracy"] for h in result.history] == [True, True]
    assert result.best_epoch == 0 and result.best == result.initial
    assert any("no epoch did better" in w for w in result.warnings)
    images = {"image": np.load(small_digits["val"])["image"]}
    np.testing.assert_allclose(ort_outputs(out, images)[0], ort_outputs(digits["teacher"], images)[0], rtol=0,
                               atol=1e-5)
