import pytest
import torch
from torch import nn

from mcgraph import McGraphError, create_model, graph_meta
from mcgraph.ir import carried_dag
from mcgraph.passes import find_modules
from mcgraph.tracing import annotate_shapes, trace


def _traced(model, shape):
    return annotate_shapes(trace(model), torch.randn(*shape))


@pytest.mark.parametrize("name,blocks,shape", [("resnet20", 9, (1, 3, 32, 32)),
                                                ("resnet18", 8, (1, 3, 32, 32)),
                                                ("resnet50", 16, (1, 3, 32, 32))])
def test_finds_the_block_chain(name, blocks, shape):
    gm = _traced(create_model(name), shape)
    code = gm.code
    dag = find_modules(gm)
    assert dag is carried_dag(gm) and gm.code == code            # analysis: graph unchanged
    assert dag.level == "module" and len(dag.blocks()) == blocks
    mods = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert dag.blocks() == [m for m in mods if m in set(dag.blocks())]   # graph order
    source = [n for n, d in dag.graph.nodes(data=True) if d["kind"] == "source"]
    assert len(source) == 1 and dag.candidates(dag.blocks()[0]) == source
    # every block's candidates: the source and all earlier blocks, with an adapter each
    for i, b in enumerate(dag.blocks()):
        assert dag.candidates(b) == source + dag.blocks()[:i]
    assert list(dag.graph.predecessors("head")) == [dag.blocks()[-1]]


def test_branch_level_for_resnext():
    gm = _traced(create_model("resnext29_4x16d"), (1, 3, 16, 16))
    dag = find_modules(gm)
    assert dag.level == "branch" and len(dag.blocks()) == 9 * 4
    assert dag.candidates("layer2.0/1") == [f"layer1.2/{k}" for k in range(4)]
    dag = find_modules(gm, level="module")                      # forced: the blocks themselves
    assert dag.level == "module" and len(dag.blocks()) == 9


class Plain(nn.Module):  # no residual structure at all
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_no_blocks_explains_what_it_looked_for():
    with pytest.raises(McGraphError, match="find_modules: no residual blocks found in Plain"):
        find_modules(_traced(Plain(), (1, 3, 8, 8)))


class Skip(nn.Module):
    """Two user blocks where the second also reads the stem: not a chain."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        s = self.stem(x)
        a = self.a(s)
        return self.b(a) + a


def test_user_modules_by_name_and_non_chain_is_explained():
    gm = annotate_shapes(trace(Skip(), ["a", "b"]), torch.randn(1, 3, 8, 8))
    with pytest.raises(McGraphError, match="a output is read by b, add"):
        find_modules(gm, ["a", "b"])


class Chain6(nn.Module):
    """Six stride-2 option-A blocks whose residual branch is zero: each block is exactly
    relu(subsample(x)), so the network's own grid is known pixel by pixel."""

    def __init__(self):
        super().__init__()
        from mcgraph.models import CifarBasicBlock
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU())
        self.layers = nn.Sequential(*[CifarBasicBlock(4, 4, 2) for _ in range(6)])
        for b in self.layers:
            nn.init.zeros_(b.conv2.weight)            # F(x) = bn2(0) = 0 (eval, fresh stats)

    def forward(self, x):
        return self.layers(self.stem(x)).mean((2, 3))


def test_adapter_reads_the_networks_own_grid_on_a_non_power_of_two_input():
    from mcgraph.masked_sum import view
    from mcgraph.masks import mask_modules
    from mcgraph.passes.find_modules import legacy_adapter_stride
    model = Chain6().eval()                           # 40 -> 20 -> 10 -> 5 -> 3 -> 2 -> 1
    x = torch.rand(1, 3, 40, 40)
    outs = {}
    for i, b in enumerate(model.layers):
        b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    model(x)
    masked = mcgraph_rewrite(model, x)
    last = {m.target: m for m in mask_modules(masked)}["layers.5"]
    k = last.candidates.index("layers.1")             # its output is 10x10; layers.5 reads 2x2
    assert last.strides[k] == (8, 8)        # 10 -> 5 -> 3 -> 2 through three stride-2 blocks
    assert legacy_adapter_stride((1, 4, 10, 10), (1, 4, 2, 2)) == (5, 5)   # the old rule's grid
    assert torch.equal(view(outs[1], last.strides[k]), outs[4])  # pixels {0, 8}: the network's
    assert not torch.equal(view(outs[1], (5, 5)), outs[4])       # {0, 5} is not


def mcgraph_rewrite(model, x):
    import mcgraph
    return mcgraph.rewrite(model, fan_in=1, init="prev", example_input=x)


class Upsample(nn.Module):
    """A block that doubles the size: nothing before it can reach what follows it."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c, c, 2, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x) + nn.functional.interpolate(x, scale_factor=2.0))


class UpNet(nn.Module):
    def __init__(self):
        super().__init__()
        from mcgraph.models import CifarBasicBlock
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = CifarBasicBlock(4, 8, 1)
        self.up = Upsample(8)
        self.b = CifarBasicBlock(8, 8, 1)

    def forward(self, x):
        return self.b(self.up(self.a(self.stem(x)))).mean((2, 3))


def test_unreachable_candidates_are_left_out_with_a_reason():
    gm = _traced(UpNet(), (1, 3, 8, 8))
    dag = find_modules(gm)
    assert dag.blocks() == ["a", "up", "b"]
    assert dag.candidates("b") == ["up"]
    why = dict(map(tuple, graph_meta.unreachable(gm)["b"]))
    assert set(why) == {"stem", "a"}
    assert "does not change size by a stride" in why["a"]
    assert dag.candidates("up") == ["stem", "a"]          # 4 -> 8 channels: zero-padded
