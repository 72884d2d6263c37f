"""One process or many (``torchrun --nproc_per_node N``): DistributedDataParallel, gloo on CPU, nccl on GPU.

``fit`` calls :func:`setup`; under torchrun (``WORLD_SIZE`` > 1) it joins the process group, otherwise it
is a no-op. Each rank sees its shard of every epoch's permutation (``DistributedSampler``), so the global
batch is ``batch_size × world_size``; losses and validation counts are all-reduced so every rank logs and
selects the best weights alike. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device

__all__ = ["DistContext", "setup", "all_reduce_sum", "any_rank"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self, sync: bool = True) -> None:
        """Leave the process group if :func:`setup` created it. ``sync``: wait for every rank first (a rank
        that tears the group down while another still saves can abort in gloo's threads); off on error paths,
        where a peer may be gone."""
        if self.owns_group and dist.is_initialized():
            if sync:
                dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str = "auto") -> DistContext:
    """The rank, world size and device of this process; joins the torchrun process group when needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=resolve_device(device))
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: run a single process instead")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device in ("auto", "cuda") and torch.cuda.is_available() or str(device).startswith("cuda")
    if wants_cuda:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    else:
        dev = resolve_device("cpu" if device == "auto" else device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev, owns_group=owns)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; returns it). Identity for one process."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True when ``flag`` is true on any rank (e.g. cancel), so every rank stops at the same step."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    return bool(all_reduce_sum(t, ctx).item() > 0)
