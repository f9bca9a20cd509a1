"""A small residual network written without mcgraph in mind: mcgraph finds its blocks by
structure (a module computing act(F(x) + S(x)), called once on the main path), not by class name.

    mcgraph rewrite examples/own_network/net.py:make --explain     # what it found, and why
"""
import torch
from torch import nn


def conv_bn(cin, cout, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Residual(nn.Module):
    """relu(F(x) + S(x)); S is a projection where the shape changes, else the identity."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.f = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout))
        self.s = nn.Identity() if cin == cout and stride == 1 else conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        return torch.relu(self.f(x) + self.s(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, widths=(16, 32, 64), depth=2):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(depth):
                blocks.append(Residual(cin, w, stride=2 if i > 0 and j == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def make(num_classes=10, in_channels=1, width=16, depth=2):
    """The factory mcgraph calls: `net.py:make`, arguments from --model-arg key=value."""
    return SmallResNet(num_classes, in_channels, (width, 2 * width, 4 * width), depth)
