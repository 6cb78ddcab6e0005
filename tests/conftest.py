"""Shared fixtures: the exported architecture zoo, the ONNX-zoo light models and the digits example, made once a session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# A rule of the dependency analysis that raises freezes its groups for users; in the tests it is a failure.
os.environ["ONNXKD_STRICT_ANALYSIS"] = "1"
# The suite is the CPU oracle (what CI runs): exact comparisons between runs and the int8 speed rules hold for
# CPU kernels and onnxruntime's CPU provider. On a GPU machine "auto" would pick CUDA in both torch and
# onnxruntime; scripts/gpu_check.sh checks that. ONNXKD_TEST_GPU=1 keeps the GPU visible.
if os.environ.get("ONNXKD_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_model(zoo_dir):
    """``zoo_model(name, exporter="legacy", external_data=False, dynamic_seq=False) -> Path`` of the exported file
    (cached)."""
    import models  # torch is imported only by tests that use the zoo

    def get(name: str, exporter: str = "legacy", external_data: bool = False, dynamic_seq: bool = False) -> Path:
        return models.export(name, zoo_dir, exporter, external_data=external_data, dynamic_seq=dynamic_seq)

    return get


# --------------------------------------------------------------------------- the digits example

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


@pytest.fixture(scope="session")
def yolo_model(tmp_path_factory):
    """``yolo_model(kind="v8", exporter="dynamo") -> Path``: a small YOLO-family detector (tests/yolo.py) exported
    with dynamic batch, height and width (cached)."""
    import yolo

    folder, made = tmp_path_factory.mktemp("yolo"), {}

    def get(kind: str = "v8", exporter: str = "dynamo") -> Path:
        if (kind, exporter) not in made:
            made[kind, exporter] = yolo.export(folder / f"yolo{kind}-{exporter}.onnx", kind, exporter)
        return made[kind, exporter]

    return get


@pytest.fixture(scope="session")
def digits():
    return {"teacher": DIGITS / "teacher.onnx", "train": DIGITS / "train.npz", "val": DIGITS / "val.npz"}


@pytest.fixture(scope="session")
def digits_student(digits, tmp_path_factory) -> Path:
    """The digits teacher with half the channels of every prunable group cut (l1), not retrained."""
    import onnxkd

    path = tmp_path_factory.mktemp("digits") / "pruned.onnx"
    onnxkd.save(onnxkd.prune(digits["teacher"], 0.5).model, path)
    return path


@pytest.fixture(scope="session")
def small_digits(digits, tmp_path_factory) -> dict:
    """300 training and 100 validation digits: enough for a few fast steps in the robustness tests."""
    folder = tmp_path_factory.mktemp("small_digits")
    train, val = np.load(digits["train"]), np.load(digits["val"])
    np.savez(folder / "train.npz", image=train["image"][:300], labels=train["labels"][:300])
    np.savez(folder / "val.npz", image=val["image"][:100], labels=val["labels"][:100])
    return {"train": folder / "train.npz", "val": folder / "val.npz"}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """torch.compile caches per code object, and every OnnxModule shares OnnxModule.forward: tests that
    compile different modules would add up to dynamo's recompile limit in one process. Start each test clean."""
    import sys

    yield
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


@pytest.fixture(scope="session")
def digit_images(small_digits, tmp_path_factory) -> dict:
    """The 300 + 100 small digits as PNG files in class folders (``train/<label>/<i>.png``), a list file of the
    training ones (``train.csv``: path,label) and the image options that read them back as the .npz values
    (pixels / 255: the .npz values to within 1/510)."""
    from PIL import Image

    from onnxkd.data import ImageOptions

    folder = tmp_path_factory.mktemp("digit_images")
    rows = []
    for split in ("train", "val"):
        data = np.load(small_digits[split])
        for i, (image, label) in enumerate(zip(data["image"], data["labels"])):
            path = folder / split / str(label) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image[0] * 255).astype(np.uint8), mode="L").save(path)
            if split == "train":
                rows.append(f"{path.relative_to(folder)},{label}")
    (folder / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return {"train": folder / "train", "val": folder / "val", "list": folder / "train.csv",
            "options": ImageOptions(mean=(0.0,), std=(1.0,))}


@pytest.fixture
def one_thread():
    """torch on one thread for the test: runs compared bit for bit with and without loader workers (on a CPU,
    distill lowers torch's threads to the cores workers leave, and other thread counts sum in other orders)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
