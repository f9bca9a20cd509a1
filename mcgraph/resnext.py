"""The paper's CIFAR ResNeXt-29 family: ``resnext29_{C}x{w}d`` (cardinality C, bottleneck width w).

Three stages of three bottleneck blocks (1x1 conv, 3x3 grouped conv with C groups, 1x1 conv, each
followed by BatchNorm; projection shortcut where the shape changes), 3x3 stem with 64 channels,
global average pooling, fc: 9 blocks x 3 layers + stem + fc = 29 layers (Xie et al. 2017).

Widths in stage s (0, 1, 2): the grouped conv has D = C * w * 2^s channels. The block output
width is ``out_s = clamp(C * w, 64, 256) * 2^s``: Xie et al.'s 256/512/1024 for the wide models
(C*w >= 256, so resnext29_8x64d has the 34.4M parameters of the paper's Table 2) and 64/128/256
for the small ones (resnext29_8x8d: 0.84M with 100 classes, the Table 2's 0.86M within 3%; with
256/512/1024 outputs it would have 2.9M). ``out_widths=`` overrides the rule.

    model = create_model("resnext29_8x8d", num_classes=100)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResNeXtBottleneck(nn.Module):
    """Same attribute names as torchvision's Bottleneck, so one rewrite handles both."""

    def __init__(self, in_planes: int, width: int, out_planes: int, cardinality: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_planes))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))                   # (N, D, H, W)
        out = self.relu(self.bn2(self.conv2(out)))                 # (N, D, H/s, W/s)
        out = self.bn3(self.conv3(out))                            # (N, out, H/s, W/s)
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(out + sc)


class CifarResNeXt(nn.Module):
    def __init__(self, cardinality: int, width: int, num_classes: int = 10, in_channels: int = 3,
                 depth: int = 29, out_widths: tuple[int, int, int] | None = None):
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        base = min(256, max(64, cardinality * width))
        outs = out_widths or (base, 2 * base, 4 * base)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        in_planes, stages = 64, []
        for s, out in enumerate(outs):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and s > 0) else 1
                blocks.append(ResNeXtBottleneck(in_planes, cardinality * width * 2**s, out,
                                                cardinality, stride))
                in_planes = out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))                      # (N, 64, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))                # (N, out_2, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))           # (N, classes)


def register(register_model) -> None:
    for c, w in ((8, 8), (8, 64), (16, 64), (4, 16), (2, 8)):
        def fn(num_classes: int = 10, in_channels: int = 3, c=c, w=w, **kw) -> nn.Module:
            return CifarResNeXt(c, w, num_classes, in_channels, **kw)
        fn.__name__ = f"resnext29_{c}x{w}d"
        fn.__doc__ = f"CIFAR ResNeXt-29, cardinality {c}, bottleneck width {w}."
        register_model("cifar-resnext", (32, 32))(fn)
