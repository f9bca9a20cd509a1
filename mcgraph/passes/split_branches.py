"""Rewrite pass: expose the C branches of every ResNeXt block and give them K-hot branch masks.

Requires: ``gm`` traced with blocks as leaves and shape-annotated; every block is a grouped
          bottleneck (``conv1``, ``bn1``, ``conv2`` with ``groups = C > 1``, ``bn2``, ``conv3``,
          ``bn3``, ``downsample``), all with the same cardinality C.
Ensures:  every block is a :class:`mcgraph.branches.BranchBlock` over C residual streams (the
          first block reads the stem output, shared), the head reads the streams' mean, and each
          block carries a C x C :class:`BranchMask` with fan-in K. The original parameters are
          reused, not copied. With ``init='full'`` and K=C the model computes what it computed.

    gm = annotate_shapes(trace(create_model("resnext29_8x8d")), torch.randn(1, 3, 32, 32))
    gm = split_branches(gm, fan_in=1, init="random")
"""
from __future__ import annotations

from typing import Iterable

from torch import fx, nn

from ..branches import BranchBlock, stream_mean
from ..errors import McGraphError
from ..masks import INITS
from .find_modules import find_modules
from .insert_masks import check_mask_options

PASS = "split_branches"
BRANCH_INITS = tuple(i for i in INITS if i != "prev")   # 'prev' has no meaning between branches
_PARTS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample")


def is_grouped_bottleneck(module: nn.Module) -> bool:
    """conv1 and conv3 1x1, stride 1, no bias (the branch rewrite runs them as matmuls);
    conv2 grouped."""
    if not all(hasattr(module, p) for p in _PARTS):
        return False
    pointwise = all(isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.stride == (1, 1)
                    and c.bias is None and c.groups == 1 for c in (module.conv1, module.conv3))
    return pointwise and isinstance(module.conv2, nn.Conv2d) and module.conv2.groups > 1


def split_branches(gm: fx.GraphModule, fan_in: int, init: str = "full", seed: int = 0,
                   modules: Iterable[type | str] | None = None,
                   mask_grad: str = "normalized") -> fx.GraphModule:
    check_mask_options(PASS, fan_in, init, mask_grad, BRANCH_INITS)
    chain = find_modules(gm, modules)
    mods = dict(gm.named_modules())
    cards = set()
    for node in chain:
        block = mods[node.target]
        if not is_grouped_bottleneck(block):
            raise McGraphError(PASS, f"{node.target} is not a grouped bottleneck (needs conv1..bn3 "
                                     "and conv2.groups > 1)")
        cards.add(block.conv2.groups)
    if len(cards) != 1:
        raise McGraphError(PASS, f"blocks have different cardinalities {sorted(cards)}; streams "
                                 "need one C")
    c = cards.pop()
    if fan_in > c:
        raise McGraphError(PASS, f"fan-in K={fan_in} is larger than the candidates of every module "
                                 f"(cardinality C={c})")
    for i, node in enumerate(chain):
        name = str(node.target)
        parent, _, leaf = name.rpartition(".")
        bb = BranchBlock(mods[name], name, fan_in, init, first=(i == 0), seed=seed, index=i,
                         grad=mask_grad)
        setattr(gm.get_submodule(parent) if parent else gm, leaf, bb)
        node.meta["mcgraph"] = {**node.meta.get("mcgraph", {}), "level": "branch", "cardinality": c}
    last = chain[-1]
    with gm.graph.inserting_after(last):
        merged = gm.graph.call_function(stream_mean, (last,))
    last.replace_all_uses_with(merged, delete_user_cb=lambda u: u is not merged)
    merged.meta["mcgraph"] = {"role": "stream_mean"}
    gm.graph.lint()
    gm.recompile()
    return gm
