"""Class ids of a --val-data image folder follow the training folders' class names, not its own sorted names."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxkd
from onnxkd.data import align_classes, input_specs, load_image_folder
from onnxkd.errors import OnnxkdError


def _folder_labels(folder) -> list[int]:
    """The digit each image is of, by its folder's name, in the order an image folder is read (sorted classes,
    sorted files)."""
    return [int(c.name) for c in sorted(folder.iterdir()) for _ in sorted(c.iterdir())]


def _spec(digits):
    return input_specs(onnx.load(str(digits["teacher"])))[0]


def _without(folder, name, into):
    shutil.copytree(folder, into)
    shutil.rmtree(into / name)
    return into


def test_a_validation_folder_missing_a_class_keeps_the_training_ids(digit_images, digits, tmp_path):
    spec = _spec(digits)
    train = load_image_folder(digit_images["train"], spec, digit_images["options"])
    val = load_image_folder(_without(digit_images["val"], "1", tmp_path / "val"), spec, digit_images["options"])
    assert "1" not in val.classes and val.classes[1] == "2"  # its own numbering: twos would be ones
    aligned = align_classes(train, val)
    assert aligned.labels.tolist() == _folder_labels(tmp_path / "val") and aligned.classes == train.classes


def test_distillation_measures_the_validation_folder_by_class_name(digit_images, digits, tmp_path):
    """Oracle: onnxruntime's accuracy of the teacher on the same images, labelled by their folders' names."""
    val = _without(digit_images["val"], "1", tmp_path / "val")
    result = onnxkd.distill(digits["teacher"], digits["teacher"], digit_images["train"], val_data=val,
                            image_options=digit_images["options"], epochs=1, lr=1e-9, seed=0)
    spec = _spec(digits)
    data = load_image_folder(val, spec, digit_images["options"])
    session = ort.InferenceSession(str(digits["teacher"]), providers=["CPUExecutionProvider"])
    images = np.asarray(data.arrays[spec.name][np.arange(len(data))])
    predicted = np.concatenate([session.run(None, {spec.name: images[i:i + 1]})[0].argmax(1)
                                for i in range(len(images))])
    truth = np.array(_folder_labels(val))
    assert result.initial["accuracy"] == pytest.approx(float(np.mean(predicted == truth)))


def test_a_validation_class_training_has_not_got_is_refused(digit_images, digits, tmp_path):
    spec = _spec(digits)
    train = load_image_folder(_without(digit_images["train"], "7", tmp_path / "train"), spec, digit_images["options"])
    val = load_image_folder(digit_images["val"], spec, digit_images["options"])
    with pytest.raises(OnnxkdError, match="class folder '7' is not among the training data's classes"):
        align_classes(train, val)


def test_images_in_a_class_folders_subfolders_are_that_class(digit_images, digits, tmp_path):
    """As torchvision's ImageFolder reads them; they were skipped."""
    train = shutil.copytree(digit_images["train"], tmp_path / "train")
    before = len(load_image_folder(train, _spec(digits), digit_images["options"]))
    nested = train / "4" / "more" / "deeper"
    nested.mkdir(parents=True)
    for image in sorted((train / "4").glob("*.png"))[:3]:
        shutil.copy(image, nested / f"copy-{image.name}")
    data = load_image_folder(train, _spec(digits), digit_images["options"])
    fours = len(list((train / "4").glob("*.png")))
    assert len(data) == before + 3 and (data.labels == 4).sum() == fours + 3
