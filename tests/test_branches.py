"""The fused K-hot branch mix against the dense einsum formulation, and branch-mask sampling."""
import pytest
import torch

import mcgraph
from helpers import assert_same_outputs, rand
from mcgraph.branches import BranchBlock, BranchMask, KHotMix
from mcgraph.masks import mask_modules, process_grad, set_grad_samples


def _rows(c, k, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(tuple(sorted(torch.randperm(c, generator=g)[:k].tolist())) for _ in range(c))


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("mode", ["raw", "normalized"])
def test_mix_equals_the_einsum_formulation(k, mode):
    c = 4
    rows = _rows(c, k, seed=k) if k < c else ((0, 1, 2, 3),) * c
    t = rand(5, c, 6, 3, 3, seed=1).requires_grad_(True)
    mask = torch.full((c, c), 0.5, requires_grad=True)
    p = KHotMix.apply(mask, rows, mode, None, t)
    g = rand(*p.shape, seed=2)
    (p * g).sum().backward()
    hot = torch.zeros(c, c)
    for i, r in enumerate(rows):
        hot[i, list(r)] = 1.0
    hot.requires_grad_(True)
    t2 = t.detach().clone().requires_grad_(True)
    ref = torch.einsum("ik,nkchw->nichw", hot, t2)
    (ref * g).sum().backward()
    assert_same_outputs(ref, p, rel=1e-6)
    assert torch.allclose(t.grad, t2.grad, atol=1e-5)
    assert torch.allclose(mask.grad, process_grad(hot.grad, mode), rtol=1e-4, atol=1e-5)


def test_mix_mask_gradient_from_a_batch_prefix():
    rows = _rows(4, 2, seed=0)
    t = rand(6, 4, 3, 2, 2, seed=3)
    g = rand(6, 4, 3, 2, 2, seed=4)
    mask = torch.full((4, 4), 0.5, requires_grad=True)
    (KHotMix.apply(mask, rows, "raw", 2, t) * g).sum().backward()
    want = torch.einsum("nichw,nkchw->ik", g[:2], t[:2]) * 3
    assert torch.allclose(mask.grad, want, rtol=1e-5, atol=1e-5)


def test_block_in_train_and_eval_mode_equals_the_unfused_block():
    torch.manual_seed(0)
    gm = mcgraph.rewrite("resnext29_4x16d", fan_in=2, init="uniform", input_size=(16, 16))
    block = gm.get_submodule("layer2.1")
    assert isinstance(block, BranchBlock)
    x = rand(4, block.cardinality, block.in_planes, 8, 8, seed=5)

    def unfused(blk, x):
        t = blk.transforms(x)
        m = blk.mask.binary().float()
        p = torch.einsum("ik,nkchw->nichw", m, t)
        n, c = p.shape[:2]
        p = blk.bn3(p.reshape(n * c, *p.shape[2:])).view(p.shape)
        return torch.relu(p + blk.shortcut(x))

    for train in (True, False):
        block.train(train)
        block.mask.set_step(7)
        want = unfused(block, x)
        block.mask.set_step(7)
        got = block(x)
        assert_same_outputs(want, got, rel=1e-5)


def test_branch_draws_change_every_step():
    gm = set_grad_samples(mcgraph.rewrite("resnext29_4x16d", fan_in=1, init="uniform",
                                          input_size=(16, 16)), 2).train()
    m = next(mm for mm in mask_modules(gm) if isinstance(mm, BranchMask))
    x = rand(3, 3, 16, 16)
    draws = []
    for _ in range(6):
        draws.append(m.binary().clone())
        gm(x).sum().backward()
    assert int(m.step) == 6 and m._step_h == 6
    assert len({tuple(d.flatten().tolist()) for d in draws}) > 1, "the same wiring every step"
    assert m.mask.grad is not None and torch.isfinite(m.mask.grad).all()
