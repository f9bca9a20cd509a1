"""Analysis pass: find the chain of residual blocks (MaskConnect's modules) in a traced model.

Requires: ``gm`` traced by :func:`mcgraph.tracing.trace` (blocks are ``call_module`` leaves) and
          annotated by :func:`mcgraph.tracing.annotate_shapes`.
Ensures:  ``node.meta['mcgraph']`` is set on the source node (what the first block reads, role
          ``source``), on every block (role ``block`` with its chain ``index``) and on the nodes
          reading the last block (role ``head``). The graph itself is not changed.

    gm = annotate_shapes(trace(model), torch.randn(1, 3, 32, 32))
    chain = find_modules(gm)          # [<node layer1_0>, <node layer1_1>, ...]
"""
from __future__ import annotations

from typing import Iterable

from torch import fx

from ..errors import McGraphError
from ..tracing import is_block, node_shape

PASS = "find_modules"


def block_nodes(gm: fx.GraphModule, modules: Iterable[type | str] | None = None) -> list[fx.Node]:
    """All ``call_module`` nodes that are residual blocks, in graph order."""
    mods = dict(gm.named_modules())
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and is_block(mods[n.target], str(n.target), modules)]


def find_modules(gm: fx.GraphModule, modules: Iterable[type | str] | None = None) -> list[fx.Node]:
    """Annotate and return the block chain; explains why when the graph is not a chain."""
    blocks = block_nodes(gm, modules)
    what = "module types/names " + ", ".join(map(str, modules)) if modules else \
        "BasicBlock/Bottleneck/CifarBasicBlock/ResNeXtBottleneck"
    if not blocks:
        raise McGraphError(PASS, f"no residual blocks found in {gm._get_name()} (looked for {what}); "
                                 "pass the block types or names with modules=/--modules")
    for i, node in enumerate(blocks):
        if len(node.args) != 1 or node.kwargs:
            raise McGraphError(PASS, f"{node.target} takes {len(node.args)} positional and "
                                     f"{len(node.kwargs)} keyword inputs; a block must take one tensor")
        src = node.args[0]
        if not isinstance(src, fx.Node):
            raise McGraphError(PASS, f"{node.target} reads a constant, not a tensor")
        if i > 0 and src is not blocks[i - 1]:
            raise McGraphError(PASS, f"{node.target} reads '{src.name}', not the previous block "
                                     f"{blocks[i - 1].target}; blocks must form a chain")
        if i < len(blocks) - 1 and len(node.users) != 1:
            readers = ", ".join(u.name for u in node.users)
            raise McGraphError(PASS, f"{node.target} output is read by {readers}; only the next "
                                     "block may read it (a chain)")
        for n in (src, node):
            shape = node_shape(n)
            if shape is None or len(shape) != 4:
                raise McGraphError(PASS, f"{node.target} expects 4-D input and output, got "
                                         f"{shape} at '{n.name}'")
        node.meta["mcgraph"] = {"role": "block", "index": i, "name": str(node.target)}
    blocks[0].args[0].meta["mcgraph"] = {"role": "source", "index": -1,  # type: ignore[union-attr]
                                         "name": blocks[0].args[0].name}  # type: ignore[union-attr]
    for user in blocks[-1].users:
        user.meta["mcgraph"] = {"role": "head", "name": user.name}
    return blocks
