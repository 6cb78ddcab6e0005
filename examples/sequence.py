"""Compress a recurrent classifier: LSTM hidden units cut in the graph, then distilled.

    python examples/sequence.py [--out examples_out/sequence]

The digits read as sequences: each 8x8 image is 8 time steps (its rows) of 8 features, the real data of
examples/digits. A 2-layer LSTM (64 hidden units a layer) learns them, is exported by torch's exporter (which
writes the zero initial states as tensors built at run time), and ``onnxkd.compress`` cuts half the hidden units
of both layers and the projection feeding them, distils the student on the training digits, and measures both
with onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teacher_training import compress_and_show, export, fit

DIGITS = Path(__file__).resolve().parent / "digits"


class Reader(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.proj = nn.Linear(8, 32)
        self.lstm = nn.LSTM(32, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, rows):
        y, _ = self.lstm(torch.relu(self.proj(rows)))
        return self.head(y[:, -1])


def _rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits' images [N, 1, 8, 8] as sequences [N, 8 steps, 8 features]."""
    data = np.load(path)
    return data["image"][:, 0].astype(np.float32), data["labels"].astype(np.int64)


def build(folder: Path, epochs: int = 30) -> dict:
    """Train the teacher, export it and write the data; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_val, y_val) = _rows(DIGITS / "train.npz"), _rows(DIGITS / "val.npz")
    torch.manual_seed(0)
    model = fit(Reader(), x_train, y_train, F.cross_entropy, epochs, lr=5e-3)
    teacher = export(model, torch.from_numpy(x_train[:2]), folder / "teacher.onnx", "rows", "logits")
    np.savez(folder / "train.npz", rows=x_train, labels=y_train)
    np.savez(folder / "val.npz", rows=x_val, labels=y_val)
    return {"teacher": teacher, "train": folder / "train.npz", "val": folder / "val.npz"}


if __name__ == "__main__":
    compress_and_show(build, "examples_out/sequence", "about 20 s on 2 CPU cores", max_accuracy_drop=0.02)
