"""The optimizer (weights and masks in two groups) and the per-step learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..mask_ops import param_groups
from .config import TrainConfig

GROUPS = {"lr": "weights", "mask_lr": "masks"}     # config field -> optimizer group


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.SGD:
    """Weights: Nesterov SGD with weight decay; masks: their own group (own lr, no decay).
    ``fused``: one kernel per group that can read its learning rate from a device tensor
    (what a captured CUDA graph step needs; see mcgraph.train.step)."""
    return torch.optim.SGD(
        param_groups(model, mask_lr=cfg.mask_lr, mask_momentum=cfg.mask_momentum),
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay, fused=fused or None)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    """Per-step schedule of the weights' lr (warm-up, then cosine or step); masks stay constant."""
    def weights(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        if cfg.schedule == "step":
            return 0.1 ** ((t >= 0.5) + (t >= 0.75))
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(opt, [weights, lambda step: 1.0])


def set_base_lrs(opt: torch.optim.Optimizer, sched, base: dict[str, float]) -> None:
    """Give the groups named in ``base`` ({"weights": lr, "masks": mask_lr}) a new base rate,
    mid-run: the schedule goes on from its step, scaled to it (a resumed run's new lr)."""
    for i, group in enumerate(opt.param_groups):
        if group.get("name") in base:
            lr = float(base[group["name"]])
            sched.base_lrs[i] = group["initial_lr"] = lr
            group["lr"] = lr * sched.lr_lambdas[i](sched.last_epoch)   # as LambdaLR computes it
            sched._last_lr[i] = group["lr"]
