"""The masked model trains: masks move, stay in [0,1], and every sampled mask has K ones."""
import torch

import mcgraph
from mcgraph.masks import mask_modules


def test_sgd_steps_move_masks_within_bounds(masked_resnet20):
    k = 2
    gm = masked_resnet20(fan_in=k, init="uniform", seed=0)
    gm.train()
    masks = mask_modules(gm)
    start = [m.mask.detach().clone() for m in masks]
    weights = [p for p in gm.parameters() if all(p is not m.mask for m in masks)]
    opt = torch.optim.SGD([{"params": weights, "lr": 0.05, "momentum": 0.9},
                           {"params": mcgraph.mask_parameters(gm), "lr": 0.5, "momentum": 0.0}])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)
    for _ in range(5):
        for m in masks:   # the K-hot vector this step will draw
            b = m.binary()
            assert int(b.sum()) == min(k, m.num_candidates)
        loss = torch.nn.functional.cross_entropy(gm(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mcgraph.clip_masks_(gm)
    moved = sum(not torch.equal(s, m.mask) for s, m in zip(start, masks))
    # a block no sampled mask reads in a step gets dL/dx_j = 0, so its mask cannot move that
    # step; over five steps most blocks are read at least once
    assert moved >= len(masks) // 2
    assert all(0.0 <= float(m.mask.detach().min()) and float(m.mask.detach().max()) <= 1.0 for m in masks)
    assert all(int(m.step) == 5 for m in masks)
