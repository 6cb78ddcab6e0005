"""Several processes (``torchrun --nproc-per-node N -m onnxkd distill ...``): DDP on the student only.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them everything here is a no-op for one process.
The backend is NCCL on CUDA and gloo on CPU (what CI tests, with 2 processes). Rank 0 alone prints,
checkpoints and writes files; the others compute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from onnxkd.errors import OnnxkdError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init(device: str) -> World:
    """Join the process group torchrun describes (once); one process without torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            check_gpu_count(local_rank)
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank, size, local_rank)


def check_gpu_count(local_rank: int) -> None:
    """One process per GPU: a process without its own GPU would fail deep in CUDA ("invalid device ordinal")."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        processes = os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))
        raise OnnxkdError(f"torchrun started {processes} processes on this machine but torch sees {count} GPU(s): "
                          f"use --nproc-per-node {count} (one process per GPU), or --device cpu")


def all_reduce_sum(values: list[float], device: torch.device, world: World) -> list[float]:
    """Element-wise sums over the processes (metric counters)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_flag(value: bool, device: torch.device, world: World) -> bool:
    """Rank 0's decision, on every process (e.g. 'the loss was not finite': all stop together)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([1 if value else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group once the run is over (a group left to interpreter exit can abort the process
    while its threads are torn down; NCCL warns about it)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The student under DDP (gradients averaged across processes); the module itself otherwise."""
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
