import pytest
import torch
from torch import nn

from mcgraph import McGraphError, create_model
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


class Plain(nn.Module):
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


class UserBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(UserBlock(4), UserBlock(4), UserBlock(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_registered_block_types_are_found_without_naming_them():
    gm = _traced(UserNet(), (1, 3, 8, 8))
    with pytest.raises(McGraphError, match="no residual blocks found"):
        find_modules(gm)
    from mcgraph.tracing import _BLOCK_TYPES, register_block
    register_block(UserBlock)
    try:
        gm = _traced(UserNet(), (1, 3, 8, 8))          # now a leaf for the tracer too
        assert find_modules(gm).blocks() == ["blocks.0", "blocks.1", "blocks.2"]
    finally:
        _BLOCK_TYPES.remove(UserBlock)
