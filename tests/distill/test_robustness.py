"""Checkpoints, --resume, Ctrl-C and divergence: an interrupted run finishes as if it never stopped,
and no failure leaves a half-written student."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ctrl_c import interrupt_at

import onnxkd
from onnxkd.distill import checkpoint

FAST = dict(epochs=2, batch_size=8, seed=3)


def _initializers(path) -> dict[str, np.ndarray]:
    model = onnxkd.load(path)
    return {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}


@pytest.mark.parametrize("stage,images", [("epoch 1/2", False), ("epoch 2/2", False), ("epoch 2/2", True)])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(digits, digits_student, small_digits, digit_images,
                                                                  tmp_path, stage, images):
    """Interrupted in the middle of an epoch (a SIGINT between two steps), resumed from the checkpoint:
    the written student is bit-identical to that of a run that never stopped. ``images``: PNG files decoded
    by 2 loader workers, augmented with crops, flips, mixup and cutmix."""
    train, options = (small_digits["train"], {}) if not images else \
        (digit_images["train"], dict(image_options=digit_images["options"], workers=2, augment="strong"))
    straight = tmp_path / "straight.onnx"
    onnxkd.distill(digits["teacher"], digits_student, train, straight, val_data=small_digits["val"],
                   **FAST, **options)

    out, work = tmp_path / "resumed.onnx", tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        onnxkd.distill(digits["teacher"], digits_student, train, out, val_data=small_digits["val"],
                       work_dir=work, progress=interrupt_at(stage), **FAST, **options)
    assert not out.exists() and checkpoint.path_in(work).exists()
    saved = checkpoint.load(work, checkpoint_fingerprint(work))
    assert saved["train"]["step"] > 0  # stopped mid-epoch, not at a boundary

    result = onnxkd.distill(digits["teacher"], digits_student, train, out,
                            val_data=small_digits["val"], work_dir=work, resume=True, **FAST, **options)
    assert result.resumed and len(result.history) == 2
    assert not checkpoint.path_in(work).exists()  # cleaned up once the student is written
    expected, got = _initializers(straight), _initializers(out)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def checkpoint_fingerprint(work):
    import torch

    return torch.load(checkpoint.path_in(work), weights_only=True)["fingerprint"]


def test_resume_refuses_a_checkpoint_of_another_run(digits, digits_student, small_digits, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "a.onnx",
                       val_data=small_digits["val"], work_dir=work, progress=interrupt_at("epoch 1/2"), **FAST)
    with pytest.raises(onnxkd.OnnxkdError, match="different run \\(options: seed 3 -> 4 changed\\)"):
        onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], tmp_path / "a.onnx",
                       val_data=small_digits["val"], work_dir=work, resume=True, **dict(FAST, seed=4))
    # the same samples in a file rewritten under the same name are other data (path and count matched before)
    moved = tmp_path / "train.npz"
    with np.load(small_digits["train"]) as train:
        np.savez(moved, image=train["image"], labels=train["labels"])
    with pytest.raises(KeyboardInterrupt):
        onnxkd.distill(digits["teacher"], digits_student, moved, tmp_path / "b.onnx", val_data=small_digits["val"],
                       work_dir=tmp_path / "w2", progress=interrupt_at("epoch 1/2"), **FAST)
    with np.load(small_digits["train"]) as train:
        np.savez(moved, image=1 - train["image"], labels=train["labels"][::-1])
    with pytest.raises(onnxkd.OnnxkdError, match="different run \\(train_data changed\\)"):
        onnxkd.distill(digits["teacher"], digits_student, moved, tmp_path / "b.onnx", val_data=small_digits["val"],
                       work_dir=tmp_path / "w2", resume=True, **FAST)


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "onnxkd", "distill", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_ctrl_c_exits_130_with_a_checkpoint_and_no_student_then_resume_finishes(digits, digits_student,
                                                                               small_digits, tmp_path):
    out = tmp_path / "student.onnx"
    args = [digits["teacher"], digits_student, "--data", small_digits["train"], "--val-data", small_digits["val"],
            "-o", out, "--epochs", "40", "--batch-size", "8"]
    process = _cli(*args)
    saved = checkpoint.path_in(tmp_path / "student.onnx.work")
    deadline = time.time() + 120
    while not saved.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert saved.exists(), process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stdout and stderr.strip() == "Interrupted."
    assert not out.exists() and saved.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left

    resumed = subprocess.run([sys.executable, "-m", "onnxkd", "distill", *map(str, args[:-4]), "--epochs", "40",
                              "--batch-size", "8", "--resume", "--steps", "1"], capture_output=True, text=True)
    assert resumed.returncode == 2 and "--epochs and --steps" in resumed.stderr  # flags are still checked
    finish = [*map(str, args[:-4]), "--epochs", "40", "--batch-size", "8", "--resume"]
    assert "resuming at epoch" in subprocess.run([sys.executable, "-m", "onnxkd", "distill", *finish, "--json"],
                                                 capture_output=True, text=True, timeout=600).stderr
    assert out.exists()


def test_divergence_stops_with_one_line_and_no_student(digits, digits_student, small_digits, tmp_path):
    out = tmp_path / "student.onnx"
    run = subprocess.run([sys.executable, "-m", "onnxkd", "distill", str(digits["teacher"]), str(digits_student),
                          "--data", str(small_digits["train"]), "--val-data", str(small_digits["val"]), "-o", str(out),
                          "--optimizer", "sgd", "--lr", "1e12", "--epochs", "3"], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: the loss became NaN/Inf") and "lower --lr" in lines[-1]
    assert "Traceback" not in run.stderr and not out.exists()
