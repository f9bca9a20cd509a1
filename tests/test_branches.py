"""The fused K-hot branch mix against the dense einsum formulation, and branch-mask sampling."""
import pytest
import torch
from helpers import assert_same_outputs, rand
from torch import nn

import mcgraph
from mcgraph.branches import BranchBlock, BranchMask, KHotMix
from mcgraph.mask_ops import set_grad_samples
from mcgraph.masks import mask_modules, process_grad


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


class RenamedGrouped(nn.Module):
    """A grouped bottleneck with none of torchvision's attribute names: found by tracing."""

    def __init__(self, cin: int, cout: int, width: int = 8, groups: int = 4, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.Conv2d(width, width, 3, stride, 1, groups=groups,
                                                       bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.Identity(),
                                  nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.body(x) + self.proj(x))


class GatedGrouped(RenamedGrouped):
    def forward(self, x):
        y = self.body(x)
        return self.out(y * torch.sigmoid(y.mean((2, 3), keepdim=True)) + self.proj(x))


class RenamedNet(nn.Module):
    def __init__(self, block=RenamedGrouped):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.stages = nn.Sequential(block(16, 16), block(16, 32, stride=2), block(32, 32))
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


def test_grouped_bottleneck_found_by_structure_whatever_its_names():
    from mcgraph.branches import BottleneckParts, bottleneck_parts
    net = RenamedNet()
    parts = bottleneck_parts(net.stages[1])
    assert isinstance(parts, BottleneckParts)
    assert parts.conv2 is net.stages[1].body[3] and parts.bn3 is net.stages[1].body[8]
    assert parts.downsample is net.stages[1].proj                 # the original Sequential
    assert bottleneck_parts(net.stages[0]).downsample is None      # identity shortcut
    dilated = RenamedGrouped(16, 16)
    dilated.body[3] = nn.Conv2d(8, 8, 3, 1, 2, dilation=2, groups=4, bias=False)
    # not rebuilt exactly
    assert bottleneck_parts(dilated).startswith("is not a grouped bottleneck")
    gated = bottleneck_parts(GatedGrouped(16, 16))
    assert gated == "has a path that is not a chain of one-input layers (a gate, a scale inside)"
    # auto level picks branch; K=C 'full' is the original network (the driver checks 1e-4)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
    masked = mcgraph.rewrite(net.eval(), fan_in=4, init="full",
                             example_input=torch.randn(1, 3, 8, 8))
    assert mcgraph.dag_of(masked).level == "branch"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), masked.eval()(x), atol=1e-5)
    assert mcgraph.dag_of(mcgraph.rewrite(RenamedNet(GatedGrouped), 1, "prev",
                                          example_input=torch.randn(1, 3, 8, 8))).level == "module"


def test_auto_level_needs_one_cardinality():
    class Mixed(RenamedNet):
        def __init__(self):
            super().__init__()
            self.stages[2] = RenamedGrouped(32, 32, groups=2)     # C = 4, 4, 2: no common streams
    x = torch.randn(1, 3, 8, 8)
    assert mcgraph.dag_of(mcgraph.rewrite(Mixed(), 1, "prev", example_input=x)).level == "module"
    with pytest.raises(mcgraph.McGraphError, match="blocks have different cardinalities"):
        mcgraph.rewrite(Mixed(), 1, "full", example_input=x, level="branch")


def test_full_k_equals_c_running_statistics():
    """K=C 'full' computes the original block's batch statistics, but BatchNorms that run over
    the C streams folded into the batch (BN3, and the projection shortcut's BN after the first
    block) count C*M values per channel instead of M = N*H*W: running_mean is the same, the
    unbiased variance in running_var is the original's times C(M-1)/(CM-1) (docs/design.md §7)."""
    torch.manual_seed(0)
    model = mcgraph.create_model("resnext29_4x16d")
    c = model.layer1[0].conv2.groups
    gm = mcgraph.rewrite(model, fan_in=c, init="full", example_input=rand(1, 3, 16, 16))
    counts = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: counts.__setitem__(
        name, i[0].numel() // i[0].shape[1])) for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)]
    x = rand(4, 3, 16, 16, seed=3)
    model.train(), gm.train()
    with torch.no_grad():
        assert_same_outputs(model(x), gm(x), rel=1e-4)       # batch statistics: the same
    for h in hooks:
        h.remove()
    folded = 0
    for name, bn in gm.named_modules():
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        ref, mom = model.get_submodule(name), bn.momentum
        assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6), name
        ratio = (bn.running_var - (1 - mom)) / (ref.running_var - (1 - mom))   # from var = 1
        m = counts[name]
        streams = name.endswith("bn3") or (name.endswith("downsample.1")
                                           and not name.startswith("layer1.0."))
        want = c * (m - 1) / (c * m - 1) if streams else 1.0
        folded += streams
        assert torch.allclose(ratio, torch.full_like(ratio, want), atol=2e-5), (name, m, want)
    assert folded == 9 + 2                       # every BN3, and stage 2 and 3's shortcut BNs


def test_fixed_full_trains_on_one_stream_and_computes_the_same():
    """K = C frozen full: the trainer's view is the original ResNeXt on one stream, sharing the
    parameters; outputs and gradients equal the C-stream model's."""
    import mcgraph
    from mcgraph.branch_blocks import OneStreamBlock
    from mcgraph.train.build import apply_connectivity, training_view
    gm = apply_connectivity(mcgraph.rewrite("resnext29_2x8d", 2, "full", in_channels=1,
                                            input_size=(16, 16)), "fixed-full", 0)
    view = training_view(gm)
    assert view is not gm and all(isinstance(view.get_submodule(b), OneStreamBlock)
                                  for b in ("layer1.0", "layer3.2"))
    x = torch.randn(4, 1, 16, 16)
    for mode in (True, False):                        # batch statistics, then running ones
        gm.train(mode), view.train(mode)
        a, b = gm(x), view(x)
        assert torch.allclose(a, b, atol=1e-5), (mode, float((a - b).abs().max()))
    gm.train(), view.train()
    w = torch.randn(4, 10)                            # a linear loss: well-conditioned grads
    (gm(x) * w).sum().backward()
    ref = {n: p.grad.clone() for n, p in gm.named_parameters() if p.grad is not None}
    gm.zero_grad()
    (view(x) * w).sum().backward()
    for n, p in gm.named_parameters():
        if n in ref:
            err = float((ref[n] - p.grad).abs().max()) / max(1e-12, float(ref[n].abs().max()))
            assert err < 1e-4, (n, err)                # relative to the tensor's scale


def test_fixed_full_compiles_to_the_original_resnext(tmp_path):
    """Every row reads every branch: compile gives the original network on one stream (its
    parameters, its ONNX operators: no gathers, no stream tiles)."""
    import onnx

    import mcgraph
    from mcgraph.train.build import apply_connectivity
    gm = apply_connectivity(mcgraph.rewrite("resnext29_2x8d", 2, "full", in_channels=1,
                                            input_size=(16, 16)), "fixed-full", 0)
    slim, report = mcgraph.compile(gm)
    assert report.params_after == sum(p.numel() for p in mcgraph.create_model(
        "resnext29_2x8d", in_channels=1).parameters())
    ops = {n.op_type for n in onnx.load(str(mcgraph.export_onnx(
        slim, tmp_path / "m.onnx", (1, 16, 16)))).graph.node}
    assert not ops & {"Gather", "Tile", "Expand", "Einsum"}, ops
