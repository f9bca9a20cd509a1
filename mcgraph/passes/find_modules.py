"""Analysis pass: find the chain of residual blocks and compute the module DAG's structure.

Requires: ``gm`` traced by :func:`mcgraph.tracing.trace` (blocks are ``call_module`` leaves) and
          annotated by :func:`mcgraph.tracing.annotate_shapes` (``node.meta['tensor_meta']``).
Ensures:  ``gm.meta["mcgraph"]["dag"]`` holds the :class:`~mcgraph.ir.ModuleDAG` structure:
          module level (every earlier output a parameter-free adapter can bring to a block's
          input shape is a candidate, across stages) or branch level (ResNeXt: the C branches of
          consecutive blocks). ``level='auto'`` picks branch when every block is a grouped
          bottleneck. The graph itself is not changed.

    gm = annotate_shapes(trace(model), torch.randn(1, 3, 32, 32))
    run_passes(gm, [FindModules()])
    carried_dag(gm).blocks()          # ['layer1.0', 'layer1.1', ...]
"""
from __future__ import annotations

import math
from typing import Iterable

from torch import fx

from ..branches import is_grouped_bottleneck
from ..ir import META, ModuleDAG, branch_dag, carried_dag, module_dag
from ..tracing import describe_blocks, is_block, node_shape
from .base import GraphPass, PassResult

LEVELS = ("auto", "module", "branch")


def adapter_stride(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int] | None:
    """Strides that bring a (N,C,H,W) output to (N,C',H',W'), or None when no option-A adapter can
    (more channels than the target, or no integer stride s with ceil(H/s) == H')."""
    if src[1] > dst[1]:
        return None
    out = []
    for a, b in ((src[2], dst[2]), (src[3], dst[3])):
        s = next((s for s in range(1, a + 1) if math.ceil(a / s) == b), None)
        if s is None:
            return None
        out.append(s)
    return out[0], out[1]


def block_nodes(gm: fx.GraphModule, modules: Iterable[type | str] | None = None) -> list[fx.Node]:
    """All ``call_module`` nodes that are residual blocks, in graph order."""
    mods = dict(gm.named_modules())
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and is_block(mods[n.target], str(n.target), modules)]


class FindModules(GraphPass):
    name = "find_modules"

    def __init__(self, modules: Iterable[type | str] | None = None, level: str = "auto"):
        if level not in LEVELS:
            raise self.error(f"unknown level '{level}', expected auto, module or branch")
        self.modules = None if modules is None else tuple(modules)
        self.level = level

    def requires(self, gm: fx.GraphModule) -> None:
        if not any("tensor_meta" in n.meta for n in gm.graph.nodes):
            raise self.error("the graph has no shapes; run annotate_shapes first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        chain = self.chain(gm)
        mods = dict(gm.named_modules())
        blocks = [mods[n.target] for n in chain]
        level = self.level
        if level == "auto":
            level = "branch" if all(is_grouped_bottleneck(b) for b in blocks) else "module"
        source = chain[0].args[0]
        if level == "branch":
            cards = [(str(n.target), self._cardinality(n, mods[n.target])) for n in chain]
            if len({c for _, c in cards}) != 1:
                raise self.error(f"blocks have different cardinalities "
                                 f"{sorted({c for _, c in cards})}; streams need one C")
            dag = branch_dag(source.name, cards)
        else:
            dag = self._module_dag(source, chain)
        gm.meta.setdefault(META, {})["dag"] = dag
        return PassResult(gm, False)

    def ensures(self, gm: fx.GraphModule) -> None:
        carried_dag(gm, self.name)

    def chain(self, gm: fx.GraphModule) -> list[fx.Node]:
        """The block chain; explains why when the graph is not a chain."""
        blocks = block_nodes(gm, self.modules)
        if not blocks:
            raise self.error(f"no residual blocks found in {gm._get_name()} (looked for "
                             f"{describe_blocks(self.modules)}); pass the block types or names "
                             "with modules=/--modules")
        for i, node in enumerate(blocks):
            t = node.target
            if len(node.args) != 1 or node.kwargs:
                raise self.error(f"takes {len(node.args)} positional and {len(node.kwargs)} "
                                 "keyword inputs; a block must take one tensor", str(t))
            src = node.args[0]
            if not isinstance(src, fx.Node):
                raise self.error("reads a constant, not a tensor", str(t))
            if i > 0 and src is not blocks[i - 1]:
                raise self.error(f"reads '{src.name}', not the previous block {blocks[i - 1].target}; "
                                 "blocks must form a chain", str(t))
            if i < len(blocks) - 1 and len(node.users) != 1:
                readers = ", ".join(u.name for u in node.users)
                raise self.error(f"output is read by {readers}; only the next block may read it "
                                 "(a chain)", str(t))
            for n in (src, node):
                shape = node_shape(n)
                if shape is None or len(shape) != 4:
                    raise self.error(f"expects 4-D input and output, got {shape} at '{n.name}'", str(t))
        return blocks

    def _cardinality(self, node: fx.Node, block) -> int:
        if not is_grouped_bottleneck(block):
            raise self.error("is not a grouped bottleneck (needs conv1..bn3 and conv2.groups > 1); "
                             "use level='module'", str(node.target))
        return int(block.conv2.groups)

    @staticmethod
    def _module_dag(source: fx.Node, chain: list[fx.Node]) -> ModuleDAG:
        producers = [source, *chain]
        names = [source.name] + [str(b.target) for b in chain]
        plans = []
        for i, block in enumerate(chain):
            target = node_shape(block.args[0])                       # (N, C, H, W) it reads
            cands = []
            for k in range(i + 1):
                shape = node_shape(producers[k])
                s = adapter_stride(shape, target)                     # type: ignore[arg-type]
                if s is not None:
                    cands.append((names[k], list(s), target[1] - shape[1]))  # type: ignore[index]
            plans.append((names[i + 1], cands))
        return module_dag(names[0], plans)


def find_modules(gm: fx.GraphModule, modules: Iterable[type | str] | None = None,
                 level: str = "auto") -> ModuleDAG:
    """Run the analysis on ``gm`` and return the DAG structure it carries now."""
    from .driver import run_passes
    run_passes(gm, [FindModules(modules, level)])
    return carried_dag(gm)
