"""Process-group setup for ``torchrun`` (nccl on GPU, gloo on CPU) and small collectives.

Used by DDP training (:mod:`aft_bench.training.trainer`) and by sharded evaluation
(:class:`aft_bench.evaluation.sample_task.SampleTask`: each rank scores its share of the sample ids).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
        device: This process's device (``cuda:LOCAL_RANK`` for ``cuda``).
        owns_group: True when this process created the process group (and must destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto`` -> cuda:LOCAL_RANK when CUDA is available, else cpu; ``cuda`` -> cuda:LOCAL_RANK.

    Raises:
        ValueError: Naming the value, for a string that is no device, or a CUDA device on a machine where
            torch sees none (instead of a driver error deep inside the first model call).
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: torch sees no CUDA device on this machine "
                         "(torch.cuda.is_available() is False); use --device cpu")
    return device


def setup(device: str = "auto") -> DistContext:
    """Reads RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun) and joins the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    target = resolve_device(device, local_rank)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
        log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=target, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    """Destroys the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: Tensor, ctx: DistContext) -> Tensor:
    """Mean of ``values`` over ranks (identity on one process)."""
    if not ctx.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


def all_reduce_sum_int(value: int, ctx: DistContext) -> int:
    """Sum of an integer over ranks."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list on one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Waits for every rank."""
    if ctx.distributed:
        dist.barrier()
