"""The plain PyTorch loop the examples train their teachers with (one-cycle AdamW, shuffled mini-batches).

Teachers come from anywhere in real life; these examples make small ones so each runs on its own.
"""

from __future__ import annotations

import math
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
