"""DDP under torchrun without DistributedDataParallel's reducer.

The DRAGAN penalty runs D three times and differentiates a gradient; DDP's bucketed reducer
does not support that pattern reliably, so gradients are averaged by one all-reduce per model
after backward, parameters are broadcast from rank 0 at start, and buffers (batch-norm running
statistics, spectral-norm vectors) are broadcast from rank 0 after each step. The result is the
same synchronous data-parallel SGD. `--sync-bn` sets `.sync` on every norm module so batch
statistics are all-reduced too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Read torchrun's env vars; init the process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def set_sync_bn(module: nn.Module, sync: bool = True) -> int:
    """Set `.sync` on every norm module from s2i_fast.model.norm; returns how many."""
    from s2i_fast.model.norm import _StatNorm

    n = 0
    for m in module.modules():
        if isinstance(m, _StatNorm):
            m.sync = sync
            n += 1
    return n


def broadcast_module(module: nn.Module, params: bool = True) -> None:
    """Rank 0's parameters (optionally) and buffers to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        if params:
            for p in module.parameters():
                dist.broadcast(p.data, 0)
        for b in module.buffers():
            dist.broadcast(b, 0)


def average_gradients(module: nn.Module) -> None:
    """Mean of every parameter gradient over ranks, in one flat all-reduce."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if flag is true on any rank (one tiny all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))
