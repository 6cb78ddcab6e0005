"""The teacher's side of every batch: its targets and hint features, computed once when that pays.

The teacher runs in eval mode without gradients and never changes, so with un-augmented data its
outputs are the same every epoch: they can be computed once, in order, before training (a deterministic
pass, so a resumed run sees the same values) and looked up by sample index afterwards, from memory or from
disk (``teacher_store``). Hint features are stored already cut to the student's channels.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from onnxkd.distill.batches import Batch
from onnxkd.distill.hints import Hint
from onnxkd.distill.teacher_store import DiskStore, MemoryStore
from onnxkd.torch_bridge import OnnxModule

Run = Callable[[OnnxModule, list, list], tuple]


class Teacher:
    def __init__(self, module: OnnxModule, tensors: list[str], hints: list[Hint], run: Run):
        self.module, self.hints, self.run = module.eval(), {h.tensor: h for h in hints}, run
        self.tensors = list(dict.fromkeys(tensors + [h.tensor for h in hints]))
        self.capture = [t for t in self.tensors if t not in module.output_names]
        self.cache: MemoryStore | DiskStore | None = None

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
        return self.forward(batch.inputs) if self.cache is None else self.cache.get(batch.indices)

    def fill(self, batches: Iterable[Batch], samples: int, store: MemoryStore | DiskStore,
             progress: Callable[[int], None] | None = None) -> None:
        """Compute the targets of all ``samples`` into ``store`` (``batches`` in order, covering every index once)."""
        done = 0
        for batch in batches:
            store.put(batch.indices, self.forward(batch.inputs), samples)
            done += len(batch.indices)
            if progress:
                progress(done)
        self.cache = store


def bytes_per_sample(values: dict[str, torch.Tensor]) -> int:
    """Memory one sample's targets take (from one batch of them)."""
    return sum(v[0].numel() * v.element_size() for v in values.values())
