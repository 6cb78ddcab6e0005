"""Compress a dense-prediction model: its output is a map, so distillation matches maps with MSE.

    python examples/segmentation.py [--out examples_out/segmentation]

The task: denoise scikit-learn's 8x8 digits (ships with scikit-learn, no download). The input is a
digit with Gaussian noise, the output the clean digit, a [N, 1, 8, 8] map — no class scores, so
``onnxkd compress`` distils with MSE against the teacher's maps and reports the output error (cosine,
mean |Δ|) instead of accuracy. The network is a small encoder-decoder (two resolutions, a skip
connection by concatenation), exported by torch's exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from teacher_training import compress_and_show, export, fit


def conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Denoiser(nn.Module):
    def __init__(self, width: int = 48):
        super().__init__()
        self.enc = nn.Sequential(conv(1, width), conv(width, width))
        self.down = nn.Sequential(nn.MaxPool2d(2), conv(width, 2 * width), conv(2 * width, 2 * width))
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Sequential(conv(2 * width, width), nn.Conv2d(width, 1, 1))

    def forward(self, x):
        skip = self.enc(x)
        return self.dec(torch.cat([self.up(self.down(skip)), skip], 1))


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images = (load_digits().images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(seed)
    noisy = (images + rng.normal(0, 0.3, images.shape)).astype(np.float32)
    order = rng.permutation(len(images))
    train, val = order[:1400], order[1400:]
    return noisy[train], images[train], noisy[val], images[val]


def build(folder: Path, epochs: int = 30) -> dict:
    """Train the teacher, export it and write the data (inputs only: the teacher's maps are the targets)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_val, y_val = make_data()
    torch.manual_seed(0)
    model = fit(Denoiser(), x_train, y_train, F.mse_loss, epochs, lr=3e-3)
    x = torch.from_numpy(x_train)
    teacher = export(model, x[:2], folder / "teacher.onnx", "noisy", "clean")
    np.savez(folder / "train.npz", noisy=x_train)
    np.savez(folder / "val.npz", noisy=x_val)
    with torch.no_grad():
        error = F.mse_loss(model(torch.from_numpy(x_val)), torch.from_numpy(y_val)).item()
    return {"teacher": teacher, "train": folder / "train.npz", "val": folder / "val.npz",
            "note": f"teacher: MSE to the clean digits {error:.4f}"}


if __name__ == "__main__":
    compress_and_show(build, "examples_out/segmentation", "about 20 s on 2 CPU cores")
