"""A trained transformer for benchmarks/int8.py: BERT-small's widths on a learnable synthetic token task, plain-torch
training, ONNX export, and a cache (``--cache DIR``) so that reruns skip both.

The task ("tokens-v1"): 5 classes, a vocabulary of 2,000 ids (0 padding, 1 the [CLS] id at position 0). Each class
owns 30 signal ids; a sequence of 24-64 ids (padded to 64) holds 2-5 signal ids of its class at random positions,
at most one of each other class (each with probability 0.3), and background ids elsewhere. The model has to find
and count them from the [CLS] position through attention over a padding mask: a sample with 2 of its own class
and 1 of another is the hard case, so it trains to about 95%, not 100%.

The model: tests/models.py's BertTiny (pre-norm encoder blocks, additive padding mask as HF BERT builds it, GELU
MLPs, [CLS] head) at BERT-small's widths (Turc et al. 2019: 4 layers, 512 wide, 8 heads, MLP 2,048), 64 tokens.
Trained with AdamW (one-cycle learning rate), batch 32, cross-entropy, CPU, 2 threads; exported with the legacy
exporter at opset 17 with a dynamic batch axis.

Splits (seeded, independent draws): train (6,400), calibration pool (628: onnxkd calibrates on 128 and checks its
budget on the other 500; the peer calibrates on the first 128), held-out test (1,000).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from int8_models import THREADS, accuracy, cached_training, models

TASK = "tokens-v1"  # change when the generator changes: the cache keys on it
VOCAB, LENGTH, CLASSES, SIGNAL = 2000, 64, 5, 30
SPLITS = {"train": (6400, 1), "pool": (628, 2), "test": (1000, 3)}  # name -> (samples, seed)
WIDTHS = {"dim": 512, "heads": 8, "mlp": 2048, "layers": 4}  # BERT-small
STEPS, BATCH, LR = 500, 32, 5e-4


def tokens(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` sequences (int64 ids [N, LENGTH], 0-padded) and their labels."""
    rng = np.random.default_rng(seed)
    signal = np.arange(2, 2 + CLASSES * SIGNAL).reshape(CLASSES, SIGNAL)
    labels = rng.permutation(np.arange(count) % CLASSES).astype(np.int64)
    ids = np.zeros((count, LENGTH), np.int64)
    for i, label in enumerate(labels):
        length = rng.integers(24, LENGTH + 1)
        sequence = rng.integers(signal.size + 2, VOCAB, length)
        sequence[0] = 1
        counts = {c: int(rng.random() < 0.3) for c in range(CLASSES) if c != label}
        counts[label] = rng.integers(2, 6)
        places = rng.permutation(np.arange(1, length))
        used = 0
        for c, n in counts.items():
            sequence[places[used:used + n]] = rng.choice(signal[c], n)
            used += n
        ids[i, :length] = sequence
    return ids, labels


def split(name: str) -> tuple[np.ndarray, np.ndarray]:
    count, seed = SPLITS[name]
    return tokens(count, seed)


def architecture() -> nn.Module:
    return models.BertTiny(vocab=VOCAB, max_len=LENGTH, **WIDTHS)


def train(seed: int = 0) -> tuple[nn.Module, dict]:
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    train_x, train_y = (torch.from_numpy(a) for a in split("train"))
    net = architecture()
    optimiser = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LR, total_steps=STEPS, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    clock, losses = time.perf_counter(), []
    net.train()
    for _ in range(STEPS):
        pick = torch.randint(0, len(train_x), (BATCH,), generator=generator)
        loss = nn.functional.cross_entropy(net(train_x[pick]), train_y[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss))
    seconds = time.perf_counter() - clock
    test_x, test_y = split("test")
    info = {"arch": "bert-small", "steps": STEPS, "lr": LR, "train_s": round(seconds, 1),
            "loss": [round(float(np.mean(losses[i:i + 100])), 4) for i in range(0, STEPS, 100)],
            "train_accuracy": accuracy(net, train_x[:1000].numpy(), train_y[:1000].numpy()),
            "test_accuracy_torch": accuracy(net, test_x, test_y)}
    return net.eval(), info


def export(net: nn.Module, path: Path) -> Path:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example = torch.from_numpy(split("pool")[0][:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids"], output_names=["output"],
                          dynamic_axes={"input_ids": {0: "batch"}, "output": {0: "batch"}})
    return path


def trained_onnx(cache: Path) -> tuple[Path, dict]:
    """The trained BERT-small's ONNX file and its training record (trained once per recipe: cached)."""
    net, info, key = cached_training(
        cache, f"bert-small-{TASK}", [TASK, SPLITS["train"], WIDTHS, STEPS, BATCH, LR, torch.__version__],
        architecture, train, f"BERT-small on the token task ({STEPS} steps of {BATCH})")
    path = cache / f"bert-small-{TASK}-{key}.onnx"
    if not path.exists():
        export(net.eval(), path)
    return path, info
