"""Compress a transformer: MLP widths and attention heads cut in the graph, then distilled.

    python examples/transformer.py [--out examples_out/transformer]

The task ships nowhere, so it is made here: sequences of 16 tokens (vocabulary 32), labelled by which of
four token families (token id mod 4) occurs most often — a small counting problem attention solves. A
BERT-style encoder (embeddings, 2 pre-norm blocks of 4 heads, GELU MLP, mean pooling) learns it, is
exported by torch's exporter, and ``onnxkd.compress`` halves its MLP widths and attention heads (the
residual width, normalised by LayerNorm, stays: see ``--prune-normalized``), distils the student on
the training sequences, and measures both with onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teacher_training import compress_and_show, export, fit

VOCAB, LENGTH, CLASSES = 32, 16, 4


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def attention(self, x):
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Encoder(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, mlp: int = 256, layers: int = 2):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Parameter(torch.randn(1, LENGTH, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, ids):
        x = self.blocks(self.tokens(ids) + self.positions)
        return self.head(self.norm(x).mean(1))


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(n, LENGTH))
    counts = np.stack([(ids % CLASSES == c).sum(1) for c in range(CLASSES)], axis=1)
    counts = counts + rng.random(counts.shape) * 0.5  # ties broken at random, so every label is defined
    return ids.astype(np.int64), counts.argmax(1).astype(np.int64)


def build(folder: Path, epochs: int = 25) -> dict:
    """Train the teacher, export it and write the data; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_data(4000, 0)
    x_val, y_val = make_data(1000, 1)
    torch.manual_seed(0)
    model = fit(Encoder(), x_train, y_train, F.cross_entropy, epochs, lr=2e-3, weight_decay=0.01)
    ids = torch.from_numpy(x_train)
    teacher = export(model, ids[:2], folder / "teacher.onnx", "ids", "logits")
    np.savez(folder / "train.npz", ids=x_train, labels=y_train)
    np.savez(folder / "val.npz", ids=x_val, labels=y_val)
    return {"teacher": teacher, "train": folder / "train.npz", "val": folder / "val.npz"}


if __name__ == "__main__":
    compress_and_show(build, "examples_out/transformer", "about 30 s on 2 CPU cores", max_accuracy_drop=0.02)
