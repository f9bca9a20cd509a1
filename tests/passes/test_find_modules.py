import pytest
import torch
from torch import nn

from mcgraph import McGraphError, create_model
from mcgraph.passes import find_modules
from mcgraph.tracing import annotate_shapes, trace


def _traced(model, shape):
    return annotate_shapes(trace(model), torch.randn(*shape))


@pytest.mark.parametrize("name,blocks,shape", [("resnet20", 9, (1, 3, 32, 32)),
                                                ("resnet18", 8, (1, 3, 32, 32)),
                                                ("resnet50", 16, (1, 3, 32, 32))])
def test_finds_the_block_chain(name, blocks, shape):
    gm = _traced(create_model(name), shape)
    chain = find_modules(gm)
    assert len(chain) == blocks
    assert [n.meta["mcgraph"]["index"] for n in chain] == list(range(blocks))
    assert chain[0].args[0].meta["mcgraph"]["role"] == "source"
    assert all(u.meta["mcgraph"]["role"] == "head" for u in chain[-1].users)


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
