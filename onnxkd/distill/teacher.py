"""The teacher's side of every batch: its targets and hint features, computed once when they fit.

The teacher runs in eval mode without gradients and never changes, so with un-augmented data its
outputs are the same every epoch: when all of them fit in ``budget_bytes`` they are computed once, in
order, before training (a deterministic pass, so a resumed run sees the same values) and looked up by
sample index afterwards. Hint features are stored already cut to the student's channels.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from onnxkd.distill.batches import Batch
from onnxkd.distill.hints import Hint
from onnxkd.torch_bridge import OnnxModule

Run = Callable[[OnnxModule, list, list], tuple]


class Teacher:
    def __init__(self, module: OnnxModule, tensors: list[str], hints: list[Hint], run: Run):
        self.module, self.hints, self.run = module.eval(), {h.tensor: h for h in hints}, run
        self.tensors = list(dict.fromkeys(tensors + [h.tensor for h in hints]))
        self.capture = [t for t in self.tensors if t not in module.output_names]
        self.cache: dict[str, torch.Tensor] | None = None

    def forward(self, inputs: list[torch.Tensor], raw: bool = False) -> dict[str, torch.Tensor]:
        """Every needed tensor for one batch; hint features cut to the student's channels unless ``raw``."""
        with torch.no_grad():
            outputs, captured = self.run(self.module, inputs, self.capture)
        values = dict(zip(self.module.output_names, outputs))
        values.update(captured)
        found = {name: values[name] for name in self.tensors}
        if not raw:
            for name, hint in self.hints.items():
                found[name] = hint.select(found[name])
        return found

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.cache is None:
            return self.forward(batch.inputs)
        index = torch.as_tensor(batch.indices, dtype=torch.long, device=next(iter(self.cache.values())).device)
        return {name: values.index_select(0, index) for name, values in self.cache.items()}

    def fill(self, batches: Iterable[Batch], samples: int, progress: Callable[[int], None] | None = None) -> None:
        """Compute the targets of all ``samples`` (``batches`` in order, covering every index once)."""
        cache: dict[str, torch.Tensor] = {}
        done = 0
        for batch in batches:
            values = self.forward(batch.inputs)
            for name, value in values.items():
                if name not in cache:
                    cache[name] = torch.empty((samples, *value.shape[1:]), dtype=value.dtype, device=value.device)
                cache[name][torch.as_tensor(batch.indices, device=value.device)] = value
            done += len(batch.indices)
            if progress:
                progress(done)
        self.cache = cache


def bytes_per_sample(values: dict[str, torch.Tensor]) -> int:
    """Memory one sample's targets take (from one batch of them)."""
    return sum(v[0].numel() * v.element_size() for v in values.values())
