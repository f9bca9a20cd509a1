"""Model registry: torchvision ResNets and the paper's CIFAR ResNets, filled by a decorator.

    model = mcgraph.create_model("resnet20", num_classes=10, in_channels=1)
    mcgraph.list_models()  # ['resnet110', 'resnet152', ...]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import McGraphError, state_dict_error


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str                 # "cifar-resnet", "torchvision-resnet", "cifar-resnext", ...
    input_size: tuple[int, int]  # default (H, W) for rewrite when none is given
    fn: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(family: str, input_size: tuple[int, int]):
    """Decorator: ``@register_model("cifar-resnet", (32, 32))`` over ``def resnet20(**kw)``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, family, input_size, fn)
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        close = [m for m in _REGISTRY if m.startswith(name[:6])] or list_models()
        raise McGraphError("create_model", f"unknown model '{name}'; known: {', '.join(close)}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 weights: str | Path | None = None, **kwargs) -> nn.Module:
    """Build a registered model with random init; ``weights`` loads a local state_dict."""
    if num_classes < 1 or in_channels < 1:
        raise McGraphError("create_model", f"num_classes and in_channels must be >= 1, "
                                           f"got {num_classes} and {in_channels}")
    model = model_info(name).fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if weights is not None:
        _load_weights(model, Path(weights), name)
    return model


def _load_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise McGraphError("create_model", f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise McGraphError("create_model",
                          f"{path} is not a loadable state_dict ({type(e).__name__})") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise McGraphError("create_model",
                           f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise McGraphError("create_model",
                          f"{path} does not fit {name}: {state_dict_error(e)}") from e


# ------------------------------------------------------------ CIFAR ResNet (He et al. 2016, 4.2)
class CifarBasicBlock(nn.Module):
    """3x3-3x3 residual block; the shortcut is option A (subsample + zero channel padding)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if self.stride != 1 or self.pad:
            sc = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.pad))
        return F.relu(out + sc)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: stem conv, 3 stages of n blocks (16/32/64), pool, fc."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise McGraphError("create_model", f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=False)
        layers, in_planes = [], 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, 2 if (b == 0 and i > 0) else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))                    # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))              # (N, 64, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))         # (N, classes)


def _cifar(depth: int):
    def fn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels)
    fn.__name__ = f"resnet{depth}"
    fn.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks per stage)."
    return fn


for _d in (8, 14, 20, 32, 38, 44, 56, 74, 110):
    register_model("cifar-resnet", (32, 32))(_cifar(_d))


# ---------------------------------------------------------------- torchvision ResNets
def _torchvision(arch: str):
    def fn(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
        import torchvision.models as tvm
        model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = model.conv1
            model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                    old.padding, bias=False)
        return model
    fn.__name__ = arch
    fn.__doc__ = f"torchvision {arch} (random init)."
    return fn


for _a in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "wide_resnet50_2", "wide_resnet101_2"):
    register_model("torchvision-resnet", (224, 224))(_torchvision(_a))
for _a in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"):
    register_model("torchvision-resnext", (224, 224))(_torchvision(_a))


def _register_resnext() -> None:
    from .resnext import register
    register(register_model)


_register_resnext()
