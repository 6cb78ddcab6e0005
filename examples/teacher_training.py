"""The plain PyTorch loop the examples train their teachers with (one-cycle AdamW, shuffled mini-batches).

Teachers come from anywhere in real life; these examples make small ones so each runs on its own.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def fit(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, loss: Callable, epochs: int, lr: float,
        batch: int = 64, weight_decay: float = 0.0, seed: int = 0) -> nn.Module:
    """Train ``model`` on (inputs, targets) and return it in eval mode."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * math.ceil(len(x) / batch))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            value = loss(model(x[index]), y[index])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def export(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> Path:
    """``model`` as torch's TorchScript exporter writes it (opset 17), with a dynamic batch; its warnings hidden."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=[input_name],
                          output_names=[output_name], dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return path


def compress_and_show(build: Callable[[Path], dict], default_out: str, training_note: str,
                      **options) -> None:
    """The examples' command line: build the teacher and its data into ``--out`` (``build`` returns the paths of
    ``teacher``, ``train`` and ``val``, and optionally a ``note`` to print), compress at ratio 0.5 (``options`` go
    to ``onnxkd.compress``) and print the terminal report."""
    import argparse

    from rich.console import Console

    import onnxkd
    from onnxkd.report.terminal import render, render_compress

    import sys

    parser = argparse.ArgumentParser(description=(sys.modules[build.__module__].__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(default_out))
    args = parser.parse_args()
    console = Console()
    console.print(f"training the teacher ({training_note}) ...")
    paths = build(args.out)
    if "note" in paths:  # what the example measured of its teacher itself
        console.print(paths["note"])
    result = onnxkd.compress(paths["teacher"], 0.5, paths["train"], val_data=paths["val"], progress=console, **options)
    render(result.to_dict(), console)
    render_compress(result.to_dict(), console)
