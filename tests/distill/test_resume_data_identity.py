"""--resume knows folders of data by what they hold: the preprocessing of an image folder, images moved between its
class folders, .npy files rewritten in place (none of which changes the folder's path, sample count or mtime)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from ctrl_c import interrupt_at

import onnxkd
from onnxkd.data import ImageOptions

FAST = dict(epochs=2, batch_size=8, seed=3)


def _interrupted(digits, student, train, val, work, **options):
    with pytest.raises(KeyboardInterrupt):
        onnxkd.distill(digits["teacher"], student, train, work.parent / "s.onnx", val_data=val, work_dir=work,
                       progress=interrupt_at("epoch 1/2"), **FAST, **options)


def _resume(digits, student, train, val, work, **options):
    return onnxkd.distill(digits["teacher"], student, train, work.parent / "s.onnx", val_data=val, work_dir=work,
                          resume=True, **FAST, **options)


def test_an_image_folder_with_other_preprocessing_or_moved_images_is_other_data(digits, digits_student, digit_images,
                                                                                small_digits, tmp_path):
    train = shutil.copytree(digit_images["train"], tmp_path / "train")
    options, val = digit_images["options"], small_digits["val"]
    _interrupted(digits, digits_student, train, val, tmp_path / "w1", image_options=options)
    with pytest.raises(onnxkd.OnnxkdError, match=r"different run \(train_data changed\)"):
        _resume(digits, digits_student, train, val, tmp_path / "w1", image_options=ImageOptions(mean=(0.5,), std=(1.0,)))
    # the same files and flags: resumed
    assert _resume(digits, digits_student, train, val, tmp_path / "w1", image_options=options).resumed

    _interrupted(digits, digits_student, train, val, tmp_path / "w2", image_options=options)
    threes = sorted((train / "3").iterdir())[:5]
    for image in threes:  # as many samples, a folder whose own mtime did not move, other labels
        image.rename(train / "8" / f"moved-{image.name}")
    with pytest.raises(onnxkd.OnnxkdError, match=r"different run \(train_data changed\)"):
        _resume(digits, digits_student, train, val, tmp_path / "w2", image_options=options)


def test_npy_files_rewritten_in_place_are_other_data(digits, digits_student, small_digits, tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    with np.load(small_digits["train"]) as train:
        np.save(folder / "image.npy", train["image"])
        np.save(folder / "labels.npy", train["labels"])
    val = small_digits["val"]
    _interrupted(digits, digits_student, folder, val, tmp_path / "w1")
    assert _resume(digits, digits_student, folder, val, tmp_path / "w1").resumed  # unchanged: resumed
    _interrupted(digits, digits_student, folder, val, tmp_path / "w2")
    mtime = folder.stat().st_mtime_ns
    with open(folder / "labels.npy", "r+b") as file:  # rewritten in place: the folder's entry does not change
        np.save(file, np.load(folder / "labels.npy")[::-1].copy())
    os.utime(folder, ns=(mtime, mtime))
    with pytest.raises(onnxkd.OnnxkdError, match=r"different run \(train_data changed\)"):
        _resume(digits, digits_student, folder, val, tmp_path / "w2")
