"""Trained CNNs for benchmarks/int8.py: a learnable synthetic 10-class image task, plain-torch training, ONNX export,
and a cache (``--cache DIR``) so that reruns skip all three.

The task ("stripes"): class k is a grating at angle k·π/10 (± 5°) with a random phase and period (4-9 pixels),
random stripe colour, background colour and contrast (0.04-0.4 on a 0-1 pixel scale), a weaker distractor
grating (0-0.9 of the contrast) at a random angle and period, a smooth colour-clutter field, one or two opaque
noisy rectangles (15-45% of the side: occlusion) and pixel noise (σ 0.25). Neighbouring classes are 18° apart;
low-contrast samples with a strong distractor are what the models get wrong, so they train to 94-97%, not 100%.
The scene is drawn in pixel units, so a larger image shows more of the same texture. Images are float32 NCHW,
normalised by the per-channel mean and std of the 64x64 training split.

Splits (seeded, disjoint draws, generated per size as needed): train (4,000: the models learn on it at 64x64;
QAD trains on a part of it), calibration pool (628: onnxkd calibrates on 128 and checks its accuracy budget on the other
500; the peer calibrates on the first 128) and a held-out test split (1,000) on which the benchmark measures every
accuracy itself.

Training: each architecture from a seeded fresh init at 64x64 only: Adam with a one-cycle learning rate, batch 64,
cross-entropy, CPU, 2 threads, channels-last, 3-12 epochs (16-90 s each here). The architectures end in global
average pooling, so the same weights are exported at 64, 112, 128 or 224 (legacy exporter, ``dynamo=False``, opset
17, BatchNorm folded, dynamic batch) and measured on that size's test split (the zoo's models and VGG 94-99%: more
texture to average). The standard-width ResNet-18 and MobileNetV2 reduce a 64x64 image 4x in their first two
layers and are far larger than 4,000 images need: they reach about 85% (ResNet-18) and under 60% (MobileNetV2,
which overfits) on this task. They are here for the speed of int8 at real widths; their accuracy is a weak model's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import models  # noqa: E402  (the architecture zoo lives with the tests)

TASK = "stripes-v3"  # change when the generator changes: the cache keys on it
CLASSES = 10
TRAIN, POOL, TEST = 4000, 628, 1000
THREADS = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the task


def stripes(count: int, size: int, seed: int, chunk: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images (float32 [N, 3, size, size], pixel scale about 0-1, not normalised) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % CLASSES).astype(np.int64)
    images = np.empty((count, 3, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for start in range(0, count, chunk):
        y = labels[start:start + chunk]
        n = len(y)

        def grating(angle: np.ndarray, period: np.ndarray) -> np.ndarray:
            cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
            phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
            return np.sin(2 * np.pi * (xx * cos + yy * sin) / period[:, None, None] + phase)

        angle = y * np.pi / CLASSES + rng.uniform(-1, 1, n) * np.deg2rad(5)
        main = grating(angle, rng.uniform(4, 9, n))
        distractor = grating(rng.uniform(0, np.pi, n), rng.uniform(3, 12, n))
        contrast = rng.uniform(0.04, 0.4, n)[:, None, None, None]
        ratio = rng.uniform(0, 0.9, n)[:, None, None, None]  # distractor strength relative to the grating
        colour = rng.uniform(-1, 1, (n, 3, 1, 1))
        colour /= np.linalg.norm(colour, axis=1, keepdims=True) / np.sqrt(3)
        other = rng.uniform(-1, 1, (n, 3, 1, 1))
        other /= np.linalg.norm(other, axis=1, keepdims=True) / np.sqrt(3)
        background = rng.uniform(0.2, 0.8, (n, 3, 1, 1))
        coarse = torch.from_numpy(rng.standard_normal((n, 3, 6, 6)).astype(np.float32))
        clutter = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).numpy()
        x = (background + contrast * (colour * main[:, None] + ratio * other * distractor[:, None])
             + 0.12 * clutter + 0.25 * rng.standard_normal((n, 3, size, size)))
        for i in range(n):  # one or two opaque rectangles, 15-45% of the side each
            for _ in range(rng.integers(1, 3)):
                h, w = (rng.uniform(0.15, 0.45, 2) * size).astype(int)
                top, left = rng.integers(0, size - h), rng.integers(0, size - w)
                x[i, :, top:top + h, left:left + w] = (rng.uniform(0, 1, (3, 1, 1))
                                                       + 0.25 * rng.standard_normal((3, h, w)))
        images[start:start + n] = x
    return images, labels


# per-channel mean and std of the 64x64 training split (the pixel statistics do not depend on the size: the scene
# is drawn in pixel units); every split at every size is normalised with them
def normalisation(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    train_x, _ = split("train", 64, cache)
    return train_x.mean((0, 2, 3), keepdims=True), train_x.std((0, 2, 3), keepdims=True)


SPLITS = {"train": (TRAIN, 1), "pool": (POOL, 2), "test": (TEST, 3)}  # name -> (samples, seed)


def split(name: str, size: int, cache: Path, normalised: bool = False,
          count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split at ``size`` (cached as generated; normalised on request); ``count`` draws
    another number of images than the split's own (the same seed: a different draw, still disjoint from the
    other splits)."""
    own, seed = SPLITS[name]
    count = count or own
    path = cache / f"{TASK}-{name}-{count}-{size}.npz"
    if not path.exists():
        clock = time.perf_counter()
        x, y = stripes(count, size, seed + 1000 * size)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.npz")
        np.savez(partial, x=x, y=y)
        partial.rename(path)
        log(f"  generated the {size}x{size} {name} split ({count} images) in {time.perf_counter() - clock:.0f} s")
    with np.load(path) as data:
        x, y = data["x"], data["y"]
    if normalised:
        mean, std = normalisation(cache)
        x = ((x - mean) / std).astype(np.float32)
    return x, y


# --------------------------------------------------------------------------- the models


class VGGTiny(nn.Module):
    """VGG-like: three stages of two conv3x3-BN-ReLU and a 2x2 max-pool (32 -> 64 -> 128 channels), then
    global average pooling and one Linear (about 155 MMACs at 64x64)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [models.conv_bn_act(cin, width), models.conv_bn_act(width, width), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class ResNet18(nn.Module):
    """ResNet-18's layout and widths (He et al. 2016): a 7x7 stride-2 stem and a 3x3 max-pool, then four stages
    of two basic blocks (64 -> 128 -> 256 -> 512 channels), global average pooling and one Linear (1.8 GMACs at
    224x224). The zoo's ResNet is a narrow 16-32-channel stand-in; int8 convolutions pay with width."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = widths[0]
        for stage, width in enumerate(widths):
            blocks += [models.BasicBlock(cin, width, 1 if stage == 0 else 2), models.BasicBlock(width, width)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0 (Sandler et al. 2018): a stride-2 stem of 32 channels, the paper's seven stages
    of inverted residuals (expansion t, channels c, repeats n, stride s), a 1x1 head of 1,280 channels, ReLU6
    throughout (0.3 GMACs at 224x224)."""

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [models.conv_bn_act(3, 32, stride=2, act=nn.ReLU6)]
        cin = 32
        for expand, width, repeats, stride in self.STAGES:
            for i in range(repeats):
                layers.append(models.InvertedResidual(cin, width, expand, stride if i == 0 else 1, nn.ReLU6,
                                                      se=False))
                cin = width
        layers.append(models.conv_bn_act(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def architecture(name: str) -> nn.Module:
    """A fresh (untrained) module: the zoo's resnet / mobilenetv2 (10 classes, as the zoo builds them), VGGTiny,
    or the standard-width ResNet18 / MobileNetV2."""
    own = {"vgg": VGGTiny, "resnet18": ResNet18, "mobilenetv2-1.0": MobileNetV2}
    return own[name](CLASSES) if name in own else models.ZOO[name].build()


# the zoo's models and VGG: 70-90 s an epoch on 2 CPU threads
EPOCHS = {"resnet": 5, "mobilenetv2": 8, "vgg": 3, "resnet18": 4, "mobilenetv2-1.0": 12}
LR = {"resnet": 3e-3, "mobilenetv2": 5e-3, "vgg": 2e-3, "resnet18": 2e-3, "mobilenetv2-1.0": 2e-3}


def export(net: nn.Module, size: int, path: Path) -> Path:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(torch.from_numpy(x[i:i + 250])).argmax(1) for i in range(0, len(x), 250)])
    return float((predicted.numpy() == y).mean())


def train(name: str, cache: Path, seed: int = 0) -> tuple[nn.Module, dict]:
    """Adam (one-cycle learning rate), batch 64, cross-entropy on the 64x64 training split; CPU, 2 threads,
    channels-last (faster here)."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    train_x, train_y = split("train", 64, cache, normalised=True)
    test_x, test_y = split("test", 64, cache, normalised=True)
    net = architecture(name).to(memory_format=torch.channels_last)
    epochs, batch = EPOCHS[name], 64
    steps = epochs * ((len(train_x) + batch - 1) // batch)
    optimiser = torch.optim.Adam(net.parameters(), lr=LR[name])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LR[name], total_steps=steps, pct_start=0.25)
    x, y = torch.from_numpy(train_x).contiguous(memory_format=torch.channels_last), torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(seed)
    clock = time.perf_counter()
    history = []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch):
            pick = order[i:i + batch]
            loss = nn.functional.cross_entropy(net(x[pick]), y[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(pick)
        history.append(round(total / len(x), 4))
    seconds = time.perf_counter() - clock
    net = net.to(memory_format=torch.contiguous_format).eval()
    info = {"arch": name, "epochs": epochs, "lr": LR[name], "train_s": round(seconds, 1), "loss": history,
            "train_accuracy": accuracy(net, train_x[:1000], train_y[:1000]),
            "test_accuracy_64_torch": accuracy(net, test_x, test_y)}
    return net, info


def cached_training(cache: Path, stem: str, recipe: list, fresh: Callable[[], nn.Module],
                    train_fresh: Callable[[], tuple[nn.Module, dict]], what: str) -> tuple[nn.Module, dict, str]:
    """``train_fresh()``'s network and training record, or the cached ones of the same recipe; and the recipe's
    key, which names the files (a changed recipe trains again)."""
    key = hashlib.sha1(json.dumps(recipe).encode()).hexdigest()[:8]
    weights, record = cache / f"{stem}-{key}.pt", cache / f"{stem}-{key}.json"
    if weights.exists() and record.exists():
        net = fresh()
        net.load_state_dict(torch.load(weights))
        return net, dict(json.loads(record.read_text()), cached=True), key
    log(f"  training {what}")
    net, info = train_fresh()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    record.write_text(json.dumps(info))
    test = next(value for name, value in info.items() if name.startswith("test_accuracy"))
    log(f"  trained in {info['train_s']:.0f} s: train {info['train_accuracy']:.1%}, test {test:.1%} (torch)")
    return net, dict(info, cached=False), key


def trained_onnx(name: str, size: int, cache: Path) -> tuple[Path, dict]:
    """The ONNX file of ``name`` trained on the 64x64 task, exported at ``size`` (the architectures end in global
    average pooling: the same weights run at any size, on the same scene drawn larger), and its training record.
    Trained once per recipe (cached)."""
    net, info, key = cached_training(
        cache, f"{name}-{TASK}", [TASK, TRAIN, name, EPOCHS[name], LR[name], torch.__version__],
        lambda: architecture(name), lambda: train(name, cache),
        f"{name} on the 64x64 task ({EPOCHS[name]} epochs on {TRAIN} images)")
    path = cache / f"{name}-{TASK}-{key}-{size}.onnx"
    if not path.exists():
        export(net.eval(), size, path)
    return path, info
