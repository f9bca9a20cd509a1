"""torchrun / DistributedDataParallel: gloo on CPU, NCCL on GPU; a no-op for one process.

    torchrun --nproc_per_node=2 -m mcgraph train resnet20 --data fashion-mnist
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import McGraphError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False              # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and local >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise McGraphError("train", f"local rank {local} has no GPU of its own ({n} visible); "
                                    "start one process per GPU, or train on device cpu (gloo)",
                           "device")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local, owned)


def wrap(model: nn.Module, d: Dist, device: torch.device, find_unused: bool = True) -> nn.Module:
    """DDP over the model. ``find_unused``: while masks learn, blocks no sampled mask reads get
    no gradient; the lowered view after the freeze computes only what is read."""
    if not d.enabled:
        return model
    ids = [d.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused)


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def sync_batchnorm_buffers(model: nn.Module, d: Dist) -> None:
    """Give every rank rank 0's BatchNorm statistics (each rank updates them from its own
    batches after DDP's last broadcast), so checkpoints and evaluation see one state."""
    if not d.enabled:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for b in (m.running_mean, m.running_var, m.num_batches_tracked):
                if b is not None:
                    dist.broadcast(b, 0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and d.owned and dist.is_initialized():
        dist.destroy_process_group()


def agree(dist: Dist, device: torch.device, bad: bool, stop: bool) -> tuple[bool, bool]:
    """Ranks decide together (a rank that stops alone would hang the others' all-reduce)."""
    if not dist.enabled:
        return bad, stop
    b, s = all_sum([float(bad), float(stop)], dist, device)
    return b > 0, s > 0
