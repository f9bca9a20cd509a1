"""Configs: frozen dataclasses. The CLI only turns options into one of these and calls the library."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewriteConfig:
    model: str
    fan_in: int
    out: str
    init: str = "uniform"
    num_classes: int = 10
    in_channels: int = 3
    input_size: tuple[int, int] | None = None   # None: the model's default (32x32 CIFAR, 224x224)
    seed: int = 0
    weights: str | None = None
    modules: tuple[str, ...] | None = None       # block type names or qualified names
    mask_grad: str = "normalized"                # normalized | centered | raw (see MaskConnect)
    aggregate: str = "mean"                      # mean | sum (see MaskConnect)


@dataclass(frozen=True)
class CompileConfig:
    checkpoint: str
    out: str
    report: str | None = None
    verify: bool = True
    opset: int = 18
    batch_sizes: tuple[int, ...] = (1, 4)       # onnxruntime is checked at each
    tolerance: float = 1e-4                      # relative to the output scale (DESIGN §4)
