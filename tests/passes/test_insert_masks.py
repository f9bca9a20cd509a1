"""docs/design.md §2: rewrite with K=1 'prev' reproduces the original model's eval outputs."""
import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, rand
from torch import nn

import mcgraph
from mcgraph import McGraphError, create_model
from mcgraph.masks import mask_modules
from mcgraph.passes.find_modules import block_stride, composed_stride, reach


@pytest.mark.parametrize("name,shape", [("resnet18", (3, 32, 32)), ("resnet50", (3, 32, 32)),
                                        ("resnet20", (1, 28, 28))])
def test_prev_k1_reproduces_the_original(name, shape):
    torch.manual_seed(0)
    model = create_model(name, in_channels=shape[0]).eval()
    # make BatchNorm non-trivial so a wrong wiring cannot hide behind identity statistics
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    masked = mcgraph.rewrite(model, fan_in=1, init="prev", example_input=rand(1, *shape))
    x = rand(3, *shape, seed=1)
    assert_same_outputs(eval_outputs(model, x), eval_outputs(masked, x), rel=1e-6)
    masked.train()  # K=1 prev samples the one positive entry in training too
    model.train()
    assert_same_outputs(model(x), masked(x), rel=1e-5)


def test_candidates_cross_stages_with_adapters(masked_resnet20):
    gm = masked_resnet20(fan_in=2, init="uniform")
    masks = {m.target: m for m in mask_modules(gm)}
    last = masks["layer3.2"]
    assert last.candidates == ["relu", "layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1",
                               "layer2.2", "layer3.0", "layer3.1"]
    assert last.strides[0] == (4, 4) and last.in_channels[0] == 16 and last.out_channels == 64
    assert last.strides[-1] == (1, 1)
    assert masks["layer1.0"].fan_in == 1                     # one candidate: takes all
    x = rand(2, 1, 16, 16)
    gm.train()
    assert gm(x).shape == (2, 10)


def test_adapter_stride_rules():
    assert block_stride((1, 16, 32, 32), (1, 32, 16, 16)) == (2, 2)
    assert block_stride((1, 16, 7, 7), (1, 32, 4, 4)) == (2, 2)      # odd sizes: ceil(7/2) = 4
    assert block_stride((1, 16, 4, 4), (1, 16, 8, 8)) is None        # space cannot grow
    # a path's stride is the product of its blocks' (10 -> 5 -> 3 -> 2: 8, not ceil-fit 5)
    assert composed_stride([(2, 2), (2, 2), (2, 2)]) == (8, 8)
    assert composed_stride([(2, 2), None]) is None
    assert reach((1, 16, 10, 10), (1, 32, 2, 2), (8, 8)) is None
    assert "channels shrink" in reach((1, 64, 8, 8), (1, 32, 8, 8), (1, 1))
    assert "maps [10, 10] to [3, 3]" in reach((1, 16, 10, 10), (1, 16, 2, 2), (4, 4))
    assert "does not change size by a stride" in reach((1, 16, 4, 4), (1, 16, 8, 8), None)


def test_bad_fan_in_and_init():
    with pytest.raises(McGraphError, match="fan-in K must be >= 1"):
        mcgraph.rewrite("resnet20", fan_in=0)
    with pytest.raises(McGraphError, match="larger than the candidates of every module"):
        mcgraph.rewrite("resnet20", fan_in=10)
    with pytest.raises(McGraphError, match="init .bogus. does not apply here"):
        mcgraph.rewrite("resnet20", fan_in=1, init="bogus")


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if x.sum() > 0:          # data-dependent control flow
            return self.conv(x)
        return x


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(McGraphError, match="trace: Untraceable cannot be traced by torch.fx"):
        mcgraph.rewrite(Untraceable(), fan_in=1)


def test_original_model_is_not_modified():
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = mcgraph.rewrite(model, fan_in=1)
    for p in gm.parameters():
        p.data.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
