"""BatchNormalization recalibration: pruning invalidates running statistics; measure them again.

Cutting channels upstream changes what every later BatchNormalization sees, so the teacher's running
mean/variance no longer describe the student's activations and the pruned model can be far worse than
its weights deserve. Before training, the student runs over training data in train mode (each BN
normalising with its batch's statistics, as in training) with no gradient, and each BN's running
statistics become the exact mean and unbiased variance of its input over all those samples (pooled
across batches and, under DDP, across processes; channel axis 1, every other axis reduced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import onnx_ir as ir
import torch

from onnxkd.distill import distributed
from onnxkd.distill.batch_first import run_entering
from onnxkd.distill.batches import Batch
from onnxkd.torch_bridge import OnnxModule


@dataclass(frozen=True)
class BatchNormNode:
    name: str
    input: str  # the tensor normalised
    mean: str  # running mean initializer
    var: str  # running variance initializer
    spatial: bool  # opsets < 9 may normalise per activation (spatial=0) instead of per channel


def batchnorm_nodes(model: ir.Model) -> list[BatchNormNode]:
    found = []
    for node in model.graph:
        if node.op_type != "BatchNormalization" or len(node.inputs) < 5 or any(v is None for v in node.inputs[:5]):
            continue
        spatial = node.attributes["spatial"].value if "spatial" in node.attributes else 1
        found.append(BatchNormNode(node.name, node.inputs[0].name, node.inputs[3].name, node.inputs[4].name,
                                   bool(spatial)))
    return found


def recalibrate(module: OnnxModule, model: ir.Model, batches: Iterable[Batch], world: distributed.World,
                run: Callable[..., tuple] | None = None) -> int:
    """Set every BN's running statistics from ``batches``; returns the number of samples used (0: no BN).

    ``run(module, inputs, capture)`` calls the module (the trainer passes one that applies autocast).
    """
    nodes = batchnorm_nodes(model)
    if not nodes:
        return 0
    run = run or run_entering
    sums: dict[str, list[torch.Tensor]] = {}
    capture = sorted({n.input for n in nodes})
    was_training = module.training
    module.train()
    count_by_node: dict[str, float] = {}
    samples = 0
    try:
        with torch.no_grad():
            for batch in batches:
                _, captured = run(module, batch.inputs, capture)
                samples += len(batch.indices)
                for node in nodes:
                    x = captured[node.input].double()
                    dims = [d for d in range(x.dim()) if d != 1] if node.spatial else [0]
                    stats = [x.sum(dims), x.square().sum(dims)]
                    count_by_node[node.name] = count_by_node.get(node.name, 0.0) + x.numel() / stats[0].numel()
                    if node.name in sums:
                        sums[node.name] = [a + b for a, b in zip(sums[node.name], stats)]
                    else:
                        sums[node.name] = stats
    finally:
        module.train(was_training)
    device = next(iter(sums.values()))[0].device
    for node in nodes:
        total, squares = (_all_reduce(t, world) for t in sums[node.name])
        count = distributed.all_reduce_sum([count_by_node[node.name]], device, world)[0]
        mean = total / count
        var = (squares - count * mean.square()) / max(count - 1, 1)
        for name, value in ((node.mean, mean), (node.var, var.clamp_min(0))):
            buffer = module.onnx_tensor(name)
            with torch.no_grad():
                buffer.copy_(value.reshape(buffer.shape).to(buffer.dtype))
    return int(distributed.all_reduce_sum([samples], device, world)[0])


def _all_reduce(tensor: torch.Tensor, world: distributed.World) -> torch.Tensor:
    if world.distributed:
        torch.distributed.all_reduce(tensor)
    return tensor
