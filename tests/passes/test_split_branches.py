"""Branch-level rewrite for ResNeXt: full init is the original; masks train; K-hot rows."""
import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, rand
from torch import nn

import mcgraph
from mcgraph import McGraphError, count_params, create_model
from mcgraph.branches import BranchBlock, BranchMask
from mcgraph.masks import mask_modules


@pytest.mark.parametrize("name,paper", [("resnext29_8x8d", 0.86e6), ("resnext29_8x64d", 34.4e6)])
def test_table2_parameter_counts(name, paper):
    n = count_params(create_model(name, num_classes=100))
    assert abs(n - paper) / paper < 0.03, n


def _perturbed(name, **kw):
    torch.manual_seed(0)
    model = create_model(name, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name,shape", [("resnext29_4x16d", (3, 16, 16)),
                                        ("resnext50_32x4d", (3, 64, 64))])
def test_full_init_computes_the_original(name, shape):
    model = _perturbed(name).eval()
    c = model.layer1[0].conv2.groups
    gm = mcgraph.rewrite(model, fan_in=c, init="full", example_input=rand(1, *shape))
    assert all(isinstance(gm.get_submodule(b), BranchBlock) for b in ("layer1.0", "layer3.1"))
    x = rand(4, *shape, seed=1)
    assert_same_outputs(eval_outputs(model, x), eval_outputs(gm, x), rel=1e-5)
    # batch statistics too (BN3 pools identical streams); keep >= 2x2 maps in the last stage,
    # where BatchNorm over very few values amplifies float rounding
    model.train()
    gm.train()
    assert_same_outputs(model(x), gm(x), rel=1e-4)


def test_branch_masks_train_with_k_ones_per_row():
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=2, init="uniform", input_size=(16, 16))
    masks = mask_modules(gm)
    assert len(masks) == 9 and all(isinstance(m, BranchMask) for m in masks)
    start = [m.mask.detach().clone() for m in masks]
    weights = [p for n, p in gm.named_parameters() if not n.endswith("mask.mask")]
    opt = torch.optim.SGD([{"params": weights},
                           {"params": mcgraph.mask_parameters(gm), "lr": 0.05, "momentum": 0}],
                          lr=0.05, momentum=0.9)
    x = rand(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(0))
    gm.train()
    for _ in range(3):
        for m in masks:
            assert (m.binary().sum(dim=1) == 2).all()
        loss = nn.functional.cross_entropy(gm(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mcgraph.clip_masks_(gm)
    assert sum(not torch.equal(s, m.mask) for s, m in zip(start, masks)) == len(masks)
    assert all(0 <= float(m.mask.detach().min()) and float(m.mask.detach().max()) <= 1
               for m in masks)


def test_bad_branch_inputs():
    with pytest.raises(McGraphError, match="larger than the candidates"):
        mcgraph.rewrite("resnext29_4x16d", fan_in=5, input_size=(16, 16))
    with pytest.raises(McGraphError, match="split_branches: init .prev. does not apply here"):
        mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="prev", input_size=(16, 16))
