"""Where a process stands in a ``torchrun`` launch, and the few collective steps the engine needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistInfo", "broadcast_object", "init_distributed", "main_process_first"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run (``world_size == 1``: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ConfigError(
                f"environment variable {name} is not set, but WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for a "
                f"distributed run; launch with torchrun, which sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}: expected an integer, found {raw!r}") from None


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE > 1``), once.

    Uses NCCL when CUDA is available (and makes ``cuda:LOCAL_RANK`` the current device), Gloo
    otherwise. Without ``WORLD_SIZE > 1`` (a plain ``python`` run, a notebook) it does nothing and
    returns ``DistInfo(1, 0, 0)``. A process group initialised beforehand is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(dist.get_world_size(), rank, _env_int("LOCAL_RANK", rank))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this PyTorch build has no torch.distributed")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    return DistInfo(world, rank, local_rank)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_process_first(info: DistInfo, load: Callable[[], T]) -> T:
    """``load()`` on the main process, then (after a barrier) on the others, so that the main process
    alone creates what is missing, such as a synthetic corpus."""
    if info.is_main:
        out = load()
    if info.distributed:
        dist.barrier()
    if not info.is_main:
        out = load()
    return out
