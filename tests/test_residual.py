"""residual_form: the structural test of one module, each way it can fail, by what it computes."""
import torch
from torch import nn

from mcgraph.residual import find_candidates, only_child, residual_form


class Sum(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.f = f

    def forward(self, x):
        return self.f(self, x)


def form(f):
    return residual_form(Sum(f))


def test_forms_that_are_blocks():
    assert (form(lambda m, x: torch.relu(m.conv(x) + x)).reason
            == "block: relu(F(x) + S(x)), S = identity")
    assert (form(lambda m, x: x.add(m.conv(x))).reason
            == "block: F(x) + S(x) (pre-activation), S = identity")
    f = form(lambda m, x: torch.sigmoid(torch.relu(torch.add(m.conv(x), x[:, :, ::1]))))
    assert f.ok and f.reason == "block: sigmoid(relu(F(x) + S(x))), S = getitem"
    # activations written out, or traced into functions: swish as x * sigmoid(x), prelu
    f = form(lambda m, x: (lambda y: y * torch.sigmoid(y))(m.conv(x) + x))
    assert f.ok and f.reason == "block: mul-of-2(F(x) + S(x)), S = identity"
    f = form(lambda m, x: torch.nn.functional.prelu(m.conv(x) + x, torch.full((1,), 0.25)))
    assert f.ok and f.reason == "block: prelu(F(x) + S(x)), S = identity"


def test_forms_that_are_not_and_why():
    assert (form(lambda m, x: m.conv(x)).reason
            == "output comes from a conv2d, not from a sum F(x) + S(x)")
    assert (form(lambda m, x: m.conv(x) + 1.0).reason
            == "its sum adds a constant, not two paths from its input")
    assert (form(lambda m, x: m.conv(x) * x).reason
            == "output is a mul of 2 paths, not a sum F(x) + S(x)")
    assert form(lambda m, x: m.conv(m.conv(x) + x)).reason.startswith("output comes from a conv2d")
    # both paths read conv(x): it transforms before the split, the block (if any) is inside
    f = form(lambda m, x: (lambda y: torch.relu(m.conv(y) + y))(m.conv(x)))
    assert not f.ok and f.reason.startswith("transforms its input before the sum's paths split")
    f = form(lambda m, x: m.conv(x) + x if x.sum() > 0 else x)         # data-dependent control flow
    assert not f.ok and f.reason.startswith("cannot be traced alone by torch.fx (TraceError")


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class Optional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x, scale=None):
        return torch.relu(self.conv(x) + x)


def test_inputs():
    assert residual_form(TwoInputs()).reason == "takes 2 inputs; a block takes one tensor"
    assert residual_form(Optional()).ok                   # defaults are fixed while tracing


def test_walk_outermost_wins_wrappers_give_way_and_verdicts_cover_every_module():
    block = Optional()
    wrapper = nn.Sequential(block)
    assert only_child(wrapper) == "0"
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ModuleList([wrapper]), Optional())
    verdicts, found = find_candidates(net)
    assert found == ["1.0.0", "2"]
    assert [(v.module, v.block) for v in verdicts] == [("1.0", False), ("1.0.0", True), ("2", True)]
    assert verdicts[0].reason == "forwards to its only child 1.0.0"
