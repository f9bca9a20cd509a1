"""Operations on every mask of a model: the optimizer's groups, the freeze, the sampling
temperature, the batch-prefix estimate, and the host mirrors a CUDA step reads.

    opt = torch.optim.SGD(param_groups(gm, mask_lr=0.05), lr=0.1, momentum=0.9)
    freeze_masks(gm)                 # every mask to its top-K
"""
from __future__ import annotations

import torch
from torch import nn

from .masked_sum import process_grad
from .masks import mask_modules


def set_grad_samples(model: nn.Module, samples: int | None) -> nn.Module:
    """Estimate every mask gradient (module and branch level) from the first ``samples`` items
    of each batch (None: all), an unbiased estimate when batches are shuffled; see
    mcgraph.masked_sum. The forward and the weights' gradients are unchanged. Returns ``model``."""
    if samples is not None and samples < 1:
        raise ValueError(f"set_grad_samples: samples must be >= 1 or None, got {samples}")
    for m in mask_modules(model):
        m.grad_samples = samples
    return model


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Sample every mask from m~^(1/T) (``T`` = 1: the paper's m~; toward 0: its top-K), on the
    host and under device wiring alike. The trainer anneals it with ``mask_anneal``."""
    if not temperature > 0:
        raise ValueError(f"set_temperature: T must be > 0, got {temperature}")
    for m in mask_modules(model):
        m.temperature = float(temperature)
        if m._device is not None:
            m._device.pool.set_temperature(float(temperature))


def param_groups(model: nn.Module, *, mask_lr: float, mask_momentum: float = 0.0,
                 **weights: float) -> list[dict]:
    """Optimizer parameter groups: the weights (with ``weights``' settings, e.g. lr, weight
    decay) and the masks m~ in a group of their own (``mask_lr``, no weight decay, plain SGD by
    default), what the trainer's optimizer uses:
    ``torch.optim.SGD(param_groups(gm, mask_lr=0.05), lr=0.1, momentum=0.9)``."""
    masks = mask_parameters(model)
    ids = {id(p) for p in masks}
    return [{"params": [p for p in model.parameters() if id(p) not in ids], "name": "weights",
             **weights},
            {"params": masks, "name": "masks", "lr": mask_lr, "momentum": mask_momentum,
             "nesterov": False, "weight_decay": 0.0}]


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The real-valued masks, for their own optimizer group (no weight decay, no momentum)."""
    return [m.mask for m in mask_modules(model)]


@torch.no_grad()
def renormalize_mask_grads_(model: nn.Module) -> None:
    """After ``GradScaler.unscale_``: restore the unit-RMS rows of 'normalized' mask gradients
    (unscaling divided them by the loss scale, which their normalization had already removed)."""
    for m in mask_modules(model):
        g = m.mask.grad
        if m.grad == "normalized" and g is not None:   # non-finite rows stay (the scaler skips)
            fixed = process_grad(g.view(m.rows, -1), "normalized").view_as(g)
            g.copy_(torch.where(torch.isfinite(g).all(), fixed, g))     # no host sync


@torch.no_grad()
def sync_masks_to_host(model: nn.Module) -> None:
    """Read every learning mask's m~ from the device in one transfer (one sync per step instead
    of one per mask); call before a forward. Without it each mask reads its own on demand."""
    stale = [m for m in mask_modules(model) if not m.is_frozen and m._values_key != m._key()]
    if not stale:
        return
    flat = torch.cat([m.mask.detach().float().reshape(-1) for m in stale]).cpu()
    for m, v in zip(stale, flat.split([m.mask.numel() for m in stale])):
        m.set_host_values(v)


def freeze_masks(model: nn.Module) -> nn.Module:
    """Freeze every mask of ``model`` in place to its top-K binary value."""
    for m in mask_modules(model):
        if not m.is_frozen:
            m.freeze()
    return model
