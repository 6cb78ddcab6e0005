"""Build the small CNN the demo ships with and save it as examples/models/tiny_cnn.onnx.

    python examples/make_example_model.py

Three conv-BN-ReLU blocks, global pooling and a linear classifier (10 classes, 3x32x32 input, dynamic
batch), exported by torch's legacy exporter with BatchNormalization kept as nodes, so training through
the bridge updates running statistics that write-back returns to the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OUT = Path(__file__).parent / "models" / "tiny_cnn.onnx"


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(block(3, 16, 1), block(16, 32, 2), block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build() -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model would have
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build(), (torch.randn(1, 3, 32, 32),), str(OUT), dynamo=False, opset_version=17, do_constant_folding=False,
            input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
