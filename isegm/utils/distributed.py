"""torchrun glue: one process per GPU (or per CPU worker), the process group made from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``).

A plain ``python script.py`` run is rank 0 of 1, and every helper here is then a no-op.
"""
from __future__ import annotations

import os
from typing import Any, List, NamedTuple

import torch.distributed as dist


class Process(NamedTuple):
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str = "gloo") -> Process:
    """Join the process group torchrun describes (once); a single process otherwise.

    ``gloo`` by default: evaluation only exchanges Python objects, which gloo does on CPU
    whatever the devices; training passes ``nccl`` for GPU gradients.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Process(0, 1, 0)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Process(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
