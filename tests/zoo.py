"""A zoo of tiny residual networks written in several styles, none of them a class mcgraph knows.

Each ``make_*`` returns ``(model, expected blocks)``; the blocks are what structural discovery
must find (qualified names, in order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():                      # non-trivial statistics: wrong wiring shows
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn


class Head(nn.Module):
    def __init__(self, c: int, classes: int = 5):
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


# ------------------------------------------------------------------ pre-activation with a gate
class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(1, c // 2), 1), nn.Conv2d(max(1, c // 2), c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class PreActGated(nn.Module):
    """out = F(pre(x)) * gate + S, S = x or a 1x1 conv of the shared pre-activation."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn0 = _bn(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.se = SE(cout)
        self.proj = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        o = F.relu(self.bn0(x))
        sc = x if self.proj is None else self.proj(o)
        return self.se(self.conv2(F.relu(self.bn1(self.conv1(o))))) + sc


class PreActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.stage1 = nn.Sequential(PreActGated(8, 8), PreActGated(8, 8))
        self.stage2 = nn.Sequential(PreActGated(8, 16, 2), PreActGated(16, 16))
        self.post = nn.Sequential(_bn(16), nn.ReLU())
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.post(self.stage2(self.stage1(self.stem(x)))))


def make_preact():
    return PreActNet(), ["stage1.0", "stage1.1", "stage2.0", "stage2.1"]


# ------------------------------------------------------------------ ResNet-D: pool+conv projection
class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class DBlock(nn.Module):
    """SiLU(drop_path(gamma * F(x)) + S(x)), S = avgpool + conv1x1 + BN when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _bn(cout), nn.SiLU(),
                               nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _bn(cout))
        self.gamma = nn.Parameter(torch.full((1, cout, 1, 1), 0.5))
        self.drop_path = DropPath(0.1)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True,
                                                       count_include_pad=False),
                                          nn.Conv2d(cin, cout, 1, bias=False), _bn(cout))
        self.act = nn.SiLU()

    def forward(self, x):
        out = self.drop_path(self.gamma * self.f(x))
        out += self.shortcut(x)
        return self.act(out)


class DNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), _bn(8), nn.ReLU())
        self.layers = nn.Sequential(DBlock(8, 8), DBlock(8, 16, 2), DBlock(16, 16))
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def make_resnet_d():
    return DNet(), ["layers.0", "layers.1", "layers.2"]


# ------------------------------------------------------------------ blocks in a ModuleList, looped
class Plain(nn.Module):
    """relu(x + conv(x)) written as torch.add, in a module that also keeps a counter attribute."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.bn = _bn(c)

    def forward(self, x):
        return torch.relu(torch.add(x, self.bn(self.conv(x))))


class ListNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, 1, 1)
        self.blocks = nn.ModuleList([Plain(6) for _ in range(4)])
        self.head = Head(6)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def make_module_list():
    return ListNet(), [f"blocks.{i}" for i in range(4)]


# ------------------------------------------------------------------ nested stages
class Stage(nn.Module):
    """A stage wrapping a Sequential: stages inside stages, and a one-block stage."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class NestedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), _bn(8), nn.ReLU())
        self.body = nn.Sequential(
            Stage([Stage([DBlock(8, 8)]), Stage([DBlock(8, 8), DBlock(8, 8)])]),
            Stage([DBlock(8, 12, 2)]))
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def make_nested():
    return NestedNet(), ["body.0.blocks.0.blocks.0", "body.0.blocks.1.blocks.0",
                         "body.0.blocks.1.blocks.1", "body.1.blocks.0"]


# ------------------------------------------------------------------ a block called twice
class TwiceNet(nn.Module):
    """``shared`` is applied twice (weight sharing): not one module of the DAG."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, 1, 1)
        self.a, self.b, self.shared = Plain(6), Plain(6), Plain(6)
        self.head = Head(6)

    def forward(self, x):
        x = self.b(self.a(self.stem(x)))
        return self.head(self.shared(self.shared(x)))


def make_twice():
    return TwiceNet(), ["a", "b"]


# ------------------------------------------------------------------ a residual side branch
class SideNet(nn.Module):
    """``aux`` and ``b`` are residual, but the flow splits around them (``aux`` reads ``a``'s
    output beside ``b`` and joins after it): neither lies on the main path; ``a`` and ``c`` do."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, 1, 1)
        self.a, self.b, self.aux, self.c = Plain(6), Plain(6), Plain(6), Plain(6)
        self.head = Head(6)

    def forward(self, x):
        x = self.a(self.stem(x))
        return self.head(self.c(self.b(x) + 0.1 * self.aux(x)))


# ------------------------------------------------------------------ no residual at all
class NoResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), SE(8),
                                      nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.features(x))


ZOO = {"preact": make_preact, "resnet_d": make_resnet_d, "module_list": make_module_list,
       "nested": make_nested, "twice": make_twice}


# ------------------------------------------------------------------ a planted signal
class Scramble(nn.Module):
    """A block whose output is the same fixed pattern whatever it reads: no class signal."""

    def __init__(self, c, h, w, seed):
        super().__init__()
        self.register_buffer("pattern", torch.rand(1, c, h, w,
                                                   generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return self.pattern.expand_as(x) + 0.0 * x


class ConvBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


class SignalNet(nn.Module):
    """stem -> scramble -> scramble -> conv block -> head: only the stem carries the class, so
    the block ``b`` should read the stem (candidate ``stem_1``), not ``s0`` or ``s1``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.s0, self.s1 = Scramble(8, 16, 16, 1), Scramble(8, 16, 16, 2)
        self.b = ConvBlock(8)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        x = self.b(self.s1(self.s0(self.stem(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, (4, 4)).flatten(1))
