"""The masked model trains: masks move, stay in [0,1], and every sampled mask has K ones."""
import torch
from helpers import rand

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
    assert all(0.0 <= float(m.mask.detach().min()) and float(m.mask.detach().max()) <= 1.0
               for m in masks)
    assert all(int(m.step) == 5 for m in masks)


def test_a_block_no_mask_reads_is_left_untouched_by_the_step(tmp_path):
    """docs/design.md §6: a block unread in a step gets no gradient (None, not zeros), so SGD
    applies neither weight decay nor momentum to it that step; the blocks that were read do
    move."""
    from mcgraph.train import distributed as D
    from mcgraph.train.config import TrainConfig
    from mcgraph.train.data import load_data
    from mcgraph.train.loop import Trainer

    cfg = TrainConfig(model="resnet20", data="synthetic", out=str(tmp_path / "run"), fan_in=1,
                      init="prev", epochs=1, batch_size=16, lr=0.1, momentum=0.9,
                      weight_decay=0.5, progress=False, seed=0)
    t = Trainer(cfg, torch.device("cpu"), D.init(torch.device("cpu")), load_data("synthetic"))
    gate = next(m for m in mask_modules(t.model) if m.target == "layer1.2")
    assert gate.candidates[gate.prev] == "layer1.1"            # prev: layer1.2 reads layer1.1
    x, y = rand(16, 1, 16, 16, seed=1), torch.arange(16) % 10
    unread = dict(t.model.get_submodule("layer1.1").named_parameters())
    read = dict(t.model.get_submodule("layer1.0").named_parameters())

    def one_hot(name):           # every mask reads its original input, layer1.2 reads ``name``
        with torch.no_grad():
            for m in mask_modules(t.model):
                m.mask.zero_()[m.prev] = 1.0
            gate.mask.zero_()[gate.candidates.index(name)] = 1.0

    one_hot("layer1.1")
    t.train_step(x, y, False)                                   # read: momentum buffers exist
    assert all(p.grad is not None for p in unread.values())
    before = {p: (p.detach().clone(), t.opt.state[p]["momentum_buffer"].clone())
              for p in [*unread.values(), *read.values()]}
    one_hot("layer1.0")                                         # layer1.1 now unread
    t.train_step(x, y, False)
    for n, p in unread.items():
        w, buf = before[p]
        assert p.grad is None, n
        assert torch.equal(p.detach(), w), n                    # no decay, no momentum step
        assert torch.equal(t.opt.state[p]["momentum_buffer"], buf), n
    assert all(not torch.equal(p.detach(), before[p][0]) for p in read.values())
