"""Build the digits example: a CNN teacher trained on scikit-learn's digits, exported to ONNX, and its data.

    python examples/digits/make_teacher.py        # writes teacher.onnx, train.npz, val.npz beside this file

The data ship inside scikit-learn (1,797 8x8 grey images of the digits 0-9: no download). 80% train the
teacher, the other 20% (stratified, seed 0) are the validation set every onnxkd command measures on.
The network is a plain conv stack, wide enough (32 -> 64 -> 64 -> 128 -> 128 channels) that cutting
half its channels makes it measurably faster in onnxruntime; it reaches about 99.7% validation accuracy.
The outputs are committed, so the demo does not retrain; this script is how they were made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).parent
WIDTH, EPOCHS, BATCH = 32, 30, 64


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCNN(nn.Module):
    def __init__(self, width: int = WIDTH, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, width), conv_bn_relu(width, 2 * width), conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2), conv_bn_relu(2 * width, 4 * width), conv_bn_relu(4 * width, 4 * width),
        )
        self.classifier = nn.Linear(4 * width, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def digits_split(seed: int = 0):
    """(x_train, y_train, x_val, y_val): images scaled to [0, 1] as float32 [N, 1, 8, 8], labels int64."""
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_train, x_val, y_train, y_val = train_test_split(images, labels.astype(np.int64), test_size=0.2,
                                                      random_state=seed, stratify=labels)
    return x_train, y_train, x_val, y_val


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    steps = EPOCHS * -(-len(images) // BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 4e-3, total_steps=steps)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(images))
        for start in range(0, len(images), BATCH):
            index = order[start:start + BATCH]
            # shift by up to one pixel: the teacher generalises better, the data stay as they are
            dx, dy = (int(v) for v in rng.integers(-1, 2, 2))
            batch = torch.roll(images[index], (dx, dy), (2, 3))
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


def main() -> None:
    x_train, y_train, x_val, y_val = digits_split()
    model = DigitsCNN()
    train(model, x_train, y_train)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x_val[:2]),), str(HERE / "teacher.onnx"), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    np.savez_compressed(HERE / "train.npz", image=x_train, labels=y_train)
    np.savez_compressed(HERE / "val.npz", image=x_val, labels=y_val)
    print(f"teacher.onnx: validation accuracy {accuracy:.2%} on {len(y_val)} images; "
          f"train.npz {len(y_train)} and val.npz {len(y_val)} samples")


if __name__ == "__main__":
    main()
