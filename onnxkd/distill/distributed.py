"""Several processes (``torchrun --nproc-per-node N -m onnxkd distill ...``): DDP on the student only.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them everything here is a no-op for one process.
The backend is NCCL on CUDA and gloo on CPU (what CI tests, with 2 processes). Rank 0 alone prints,
checkpoints and writes files; the others compute.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

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


# set while this process works alone although torchrun started others: compress's rank 0 pruning, optimizing,
# quantizing (QAD) and validating while the other ranks wait for the distillation or have left
_alone = False


def init(device: str, timeout: timedelta | None = None) -> World:
    """Join the process group torchrun describes (once); one process without torchrun, or ``alone``.
    ``timeout``: how long a collective may wait for the other processes (the first call sets it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or _alone:
        return World()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            check_gpu_count(local_rank)
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, **({} if timeout is None else {"timeout": timeout}))
    return World(rank, size, local_rank)


@contextlib.contextmanager
def alone():
    """Within: this process is a world of its own (distillation in it uses no collective), the others wait."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def share(value, world: World):
    """Rank 0's ``value`` (any picklable object), on every process; the others wait until rank 0 gets here."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave(world: World) -> None:
    """The processes part (after compress's distillation): rank 0 goes on alone, the others are done."""
    global _alone
    if world.distributed:
        shutdown()
        _alone = True


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
