"""Data read by loader workers: the same batches, in the same order, as in the training process; a user's data
error in a worker is one line; augmentation shows the teacher and the student the same tensors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import onnxkd
from onnxkd.data import Dataset, InputSpec, load_data
from onnxkd.distill.batches import Batches
from onnxkd.distill.loader import Loader
from onnxkd.errors import OnnxkdError

CPU = torch.device("cpu")
IMAGE = InputSpec("image", np.dtype(np.float32), ("batch", 1, 8, 8))


def _epoch(dataset: Dataset, workers: int, epoch: int, start: int = 0) -> list:
    batches = Batches(Loader(dataset, ["image"], CPU, workers), 16, seed=5)
    return [(b.indices, b.inputs[0], b.labels) for b in batches.epoch(epoch, start)]


@pytest.mark.parametrize("source", ["train", "list"])
def test_workers_give_the_batches_of_the_in_memory_reader(digit_images, small_digits, source):
    """Image files decoded in 2 workers, from a mid-epoch step on, equal the same pixels held in memory,
    batch by batch (indices, values, labels), and the .npz the images were written from to 1/510."""
    lazy = load_data(digit_images[source], [IMAGE], digit_images["options"])
    in_memory = Dataset({"image": np.asarray(lazy.arrays["image"])}, lazy.labels, "memory")
    npz = np.load(small_digits["train"])
    for epoch, start in ((0, 0), (1, 7)):
        got, expected = _epoch(lazy, 2, epoch, start), _epoch(in_memory, 0, epoch, start)
        assert len(got) == len(expected) == 19 - start
        for (i, x, y), (ei, ex, ey) in zip(got, expected):
            np.testing.assert_array_equal(i, ei)
            torch.testing.assert_close(x, ex, rtol=0, atol=0)
            torch.testing.assert_close(y, ey, rtol=0, atol=0)
    # class folders: label-sorted, file names in .npz order; the list: its lines' order, the .npz order
    order = np.argsort(npz["labels"], kind="stable") if source == "train" else np.arange(len(npz["labels"]))
    np.testing.assert_allclose(np.asarray(lazy.arrays["image"]), npz["image"][order], atol=1 / 510 + 1e-7)
    np.testing.assert_array_equal(lazy.labels, npz["labels"][order])


def _corrupt_folder(digit_images, tmp_path):
    """A copy of the training images with one file that is not an image."""
    import shutil

    folder = tmp_path / "images"
    shutil.copytree(digit_images["train"], folder)
    bad = folder / "3" / "0999.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    return folder, bad


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_is_one_line_naming_it(digit_images, tmp_path, workers):
    folder, bad = _corrupt_folder(digit_images, tmp_path)
    dataset = load_data(folder, [IMAGE], digit_images["options"])
    with pytest.raises(OnnxkdError) as caught:
        for epoch in range(2):
            _epoch(dataset, workers, epoch)
    message = str(caught.value)
    assert str(bad) in message and "cannot read image" in message and "\n" not in message


def test_a_corrupt_image_hit_in_a_worker_exits_2_and_writes_nothing(digits, digits_student, digit_images, tmp_path):
    folder, bad = _corrupt_folder(digit_images, tmp_path)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, "-m", "onnxkd", "distill", str(digits["teacher"]), str(digits_student),
                          "--data", str(folder), "--mean", "0", "--std", "1", "--workers", "2", "--epochs", "1",
                          "-o", str(out / "student.onnx")], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in run.stderr
    assert not (out / "student.onnx").exists() and not list(out.glob("*.onnx*"))
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_under_augmentation_the_teacher_and_the_student_see_the_same_tensors(digits, digits_student, small_digits,
                                                                            monkeypatch):
    """Every training step's teacher and student forward get the identical augmented batch, which differs from
    the batch read (the augmentation ran) and from step to step."""
    import onnxkd.distill.api as api

    seen: list[tuple[str, torch.Tensor]] = []
    original = api.to_torch

    def recording(model, **options):
        module = original(model, **options)
        label = "teacher" if len(seen_modules) == 0 else "student"
        seen_modules.append(label)
        module.register_forward_pre_hook(lambda m, args: seen.append((label, args[0].detach().clone())))
        return module

    seen_modules: list[str] = []
    monkeypatch.setattr(api, "to_torch", recording)
    augmented = []

    def augment(inputs, generator):
        out, mixed = onnxkd_augment(inputs, generator)
        augmented.append(out[0].clone())
        return out, mixed

    from onnxkd.distill.augment import Augmenter, policy
    onnxkd_augment = Augmenter(policy("strong"), [0])
    onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], val_data=small_digits["val"],
                   epochs=1, batch_size=32, augment=augment, recalibrate_bn=False)
    assert len(augmented) == 10
    # a training step: the student's forward of the augmented batch and the teacher's of the same
    for batch in augmented:
        teacher = [x for label, x in seen if label == "teacher" and x.shape == batch.shape and torch.equal(x, batch)]
        student = [x for label, x in seen if label == "student" and x.shape == batch.shape and torch.equal(x, batch)]
        assert len(teacher) == 1 and len(student) == 1
    assert not torch.equal(augmented[0], augmented[1])
    train = np.load(small_digits["train"])["image"]
    assert not any(np.isclose(train, a[0].numpy()).all(axis=(1, 2, 3)).any() for a in augmented[:3])


def test_augmented_runs_resume_and_repeat_bit_for_bit(digits, digits_student, digit_images, tmp_path, one_thread):
    """Workers and augmentation draw nothing from global state: two runs with 0 and 2 workers write the same
    student. (Both train on one torch thread: with workers on a 2-core CPU, distill lowers torch's threads to
    the cores the workers leave, and another thread count sums in another order.)"""
    common = dict(val_data=digit_images["val"], image_options=digit_images["options"], epochs=1, batch_size=32,
                  augment="strong", seed=4)
    a = onnxkd.distill(digits["teacher"], digits_student, digit_images["train"], workers=0, **common).model
    b = onnxkd.distill(digits["teacher"], digits_student, digit_images["train"], workers=2, **common).model
    for name, value in a.graph.initializers.items():
        np.testing.assert_array_equal(b.graph.initializers[name].const_value.numpy(), value.const_value.numpy())


def test_each_image_is_decoded_once_per_run_and_read_back_the_same(digit_images, tmp_path, monkeypatch):
    """With a decoded cache, the rows 2 workers decoded are read back by workers (no decoding) while some rows are
    still to decode, and, once every image is decoded, by the training process itself on CPU (the workers would
    only take cores from training); all as the same values. The cache goes with its folder."""
    from onnxkd.data.decoded import cache_decoded_images, decoded_in_full, drop_decoded_images
    from onnxkd.data.images import ImageReader

    dataset = load_data(digit_images["train"], [IMAGE], digit_images["options"])
    plain = _epoch(dataset, 0, 0) + _epoch(dataset, 0, 1)
    folder = tmp_path / "decoded"
    assert cache_decoded_images([dataset], folder) == 300 * 8 * 8
    decoded = _epoch(dataset, 2, 0, start=10)  # workers decode the rows of the epoch's last 9 batches
    assert not decoded_in_full(dataset)

    def refuse(self, path):
        raise AssertionError(f"decoded again: {path}")

    with monkeypatch.context() as patch:
        patch.setattr(ImageReader, "_decode", refuse)
        read_back = _epoch(dataset, 2, 0, start=10)  # the cache is not full yet: workers read it
    decoded += _epoch(dataset, 2, 0)  # the other rows are decoded now, in workers
    assert decoded_in_full(dataset)

    def no_workers(self):
        raise AssertionError("loader workers started once every image was decoded")

    monkeypatch.setattr(ImageReader, "_decode", refuse)
    monkeypatch.setattr(Loader, "_workers", no_workers)
    in_process = _epoch(dataset, 2, 1)  # --workers 2, read in the training process
    for (i, x, _), (ei, ex, _) in zip(decoded + read_back + in_process, plain[10:19] + plain[:19] + plain[10:19]
                                      + plain[19:]):
        np.testing.assert_array_equal(i, ei)
        torch.testing.assert_close(x, ex, rtol=0, atol=0)
    assert len(decoded + read_back + in_process) == 9 + 19 + 9 + 19
    drop_decoded_images([dataset], folder)
    assert not folder.exists()


def test_distilling_from_images_leaves_no_cache_and_trains_the_uncached_student(digits, digits_student, digit_images,
                                                                              tmp_path, one_thread):
    common = dict(val_data=digit_images["val"], image_options=digit_images["options"], epochs=2, batch_size=32,
                  workers=2)
    lines = []
    cached = onnxkd.distill(digits["teacher"], digits_student, digit_images["train"], tmp_path / "s.onnx",
                            progress=lambda e: lines.append(e.get("text", "")), **common)
    assert any("decoding each image once" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]
    uncached = onnxkd.distill(digits["teacher"], digits_student, digit_images["train"], **common)  # no work folder
    for name, value in uncached.model.graph.initializers.items():
        np.testing.assert_array_equal(cached.model.graph.initializers[name].const_value.numpy(),
                                      value.const_value.numpy(), err_msg=name)
