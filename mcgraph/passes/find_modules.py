"""Analysis pass: find the chain of residual blocks and compute the module DAG's structure.

Requires: ``gm`` traced by :func:`mcgraph.tracing.trace` (blocks are ``call_module`` leaves) and
          annotated by :func:`mcgraph.tracing.annotate_shapes` (``node.meta['tensor_meta']``);
          the blocks are ``modules`` (types or names) or, by default, those the analysis pass
          ``discover_blocks`` kept (:func:`mcgraph.graph_meta.discovery`).
Ensures:  :func:`mcgraph.graph_meta.dag` holds the :class:`~mcgraph.ir.ModuleDAG` structure:
          module level (every earlier output the parameter-free adapter can bring to a block's
          input shape, subsampling by the composed stride of the blocks between, is a candidate,
          across stages; :func:`mcgraph.graph_meta.unreachable` says why each other one is not)
          or branch level (ResNeXt: the C branches of consecutive blocks). ``level='auto'``
          picks branch when every block is a grouped bottleneck of one cardinality C. The graph is
          not changed.

    gm = annotate_shapes(trace(model), torch.randn(1, 3, 32, 32))
    run_passes(gm, [DiscoverBlocks(), FindModules()])
    carried_dag(gm).blocks()          # ['layer1.0', 'layer1.1', ...]
"""
from __future__ import annotations

import math
from typing import Iterable

from torch import fx

from .. import graph_meta
from ..branches import bottleneck_parts
from ..errors import McGraphError
from ..ir import ModuleDAG, branch_dag, carried_dag, module_dag
from ..tracing import describe_blocks, is_block, node_shape
from .base import GraphPass, PassResult

LEVELS = ("auto", "module", "branch")


def block_stride(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int] | None:
    """The spatial stride of one block mapping (N,C,H,W) to (N,C',H',W'): per dimension the
    smallest s with ceil(H/s) == H' (what a stride-s conv or pool with 'same' padding gives),
    or None when no stride maps H to H' (the block upsamples)."""
    out = []
    for a, b in ((src[2], dst[2]), (src[3], dst[3])):
        s = next((s for s in range(1, a + 1) if math.ceil(a / s) == b), None)
        if s is None:
            return None
        out.append(s)
    return out[0], out[1]


legacy_adapter_stride = block_stride    # checkpoint format 1 took this between any two outputs


def composed_stride(strides: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The stride of a path of blocks: the product of theirs (None when one is not a stride)."""
    sh = sw = 1
    for s in strides:
        if s is None:
            return None
        sh, sw = sh * s[0], sw * s[1]
    return sh, sw


def reach(src: tuple[int, ...], dst: tuple[int, ...], stride: tuple[int, int] | None) -> str | None:
    """Why the parameter-free adapter (subsample by the path's ``stride``, zero-pad channels)
    cannot bring an output of shape ``src`` to ``dst``; None when it can."""
    if src[1] > dst[1]:
        return f"channels shrink ({src[1]} -> {dst[1]})"
    if stride is None:
        return "a block on the path between them does not change size by a stride"
    got = (math.ceil(src[2] / stride[0]), math.ceil(src[3] / stride[1]))
    if got != tuple(dst[2:4]):
        return (f"the path's stride {list(stride)} maps {list(src[2:4])} to {list(got)}, "
                f"not {list(dst[2:4])}")
    return None


def block_nodes(gm: fx.GraphModule, modules: Iterable[type | str] | None = None) -> list[fx.Node]:
    """All ``call_module`` nodes that are residual blocks, in graph order: those of ``modules``,
    or (None) those ``discover_blocks`` kept."""
    if modules is None:
        disc = graph_meta.discovery(gm) or {}
        if "blocks" not in disc:
            raise McGraphError("find_modules", "no blocks discovered; run discover_blocks first "
                                               "(mcgraph.rewrite does) or pass modules=")
        modules = disc["blocks"]
        return [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in modules]
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
            parts = [bottleneck_parts(b) for b in blocks]
            groups = {p.conv2.groups for p in parts if not isinstance(p, str)}
            level = "branch" if len(groups) == 1 and not any(isinstance(p, str) for p in parts) \
                else "module"                       # streams need every block grouped, one C
        source = chain[0].args[0]
        if level == "branch":
            cards = [(str(n.target), self._cardinality(n, mods[n.target])) for n in chain]
            if len({c for _, c in cards}) != 1:
                raise self.error(f"blocks have different cardinalities "
                                 f"{sorted({c for _, c in cards})}; streams need one C")
            dag = branch_dag(source.name, cards)
        else:
            dag, unreachable = self._module_dag(source, chain)
            graph_meta.set_unreachable(gm, unreachable)
        graph_meta.set_dag(gm, dag)
        return PassResult(gm, False)

    def ensures(self, gm: fx.GraphModule) -> None:
        carried_dag(gm, self.name)

    def chain(self, gm: fx.GraphModule) -> list[fx.Node]:
        """The block chain; explains why when the graph is not a chain."""
        blocks = block_nodes(gm, self.modules)
        if not blocks:
            raise self.error(self._none_found(gm))
        for i, node in enumerate(blocks):
            t = node.target
            if len(node.args) != 1 or node.kwargs:
                raise self.error(f"takes {len(node.args)} positional and {len(node.kwargs)} "
                                 "keyword inputs; a block must take one tensor", str(t))
            src = node.args[0]
            if not isinstance(src, fx.Node):
                raise self.error("reads a constant, not a tensor", str(t))
            if i > 0 and src is not blocks[i - 1]:
                between = _between(gm, blocks[i - 1], node)
                raise self.error(f"reads '{src.name}', not the previous block "
                                 f"{blocks[i - 1].target}{between}; blocks must form one chain "
                                 "(networks with non-residual transitions between blocks are "
                                 "out of scope: docs/design.md, Scope)", str(t))
            if i < len(blocks) - 1 and len(node.users) != 1:
                readers = ", ".join(u.name for u in node.users)
                raise self.error(f"output is read by {readers}; only the next block may read it "
                                 "(a chain)", str(t))
            for n in (src, node):
                shape = node_shape(n)
                if shape is None or len(shape) != 4:
                    raise self.error(f"expects 4-D input and output, got {shape} at '{n.name}'",
                                     str(t))
        return blocks

    def _none_found(self, gm: fx.GraphModule) -> str:
        if self.modules is not None:
            return (f"no residual blocks found in {gm._get_name()} (looked for "
                    f"{describe_blocks(self.modules)}); check the block types or names given "
                    "with modules=/--modules")
        from .discover_blocks import nearest
        verdicts = (graph_meta.discovery(gm) or {})["verdicts"]
        return (f"no residual blocks found in {gm._get_name()} (a block returns act(F(x) + S(x)) "
                f"and is called once on the main path); nearest: {nearest(verdicts)}; hint: "
                "name the blocks with modules=/--modules, or see mcgraph rewrite --explain")

    def _cardinality(self, node: fx.Node, block) -> int:
        parts = bottleneck_parts(block)
        if isinstance(parts, str):
            raise self.error(f"is not a grouped bottleneck: it {parts}; use level='module'",
                             str(node.target))
        return int(parts.conv2.groups)

    @staticmethod
    def _module_dag(source: fx.Node, chain: list[fx.Node]) -> tuple[ModuleDAG, dict[str, list]]:
        """Candidates of block j: the source and every earlier block whose output the
        parameter-free adapter brings to j's input, subsampling by the composed stride of the
        blocks between them (the network's own grid); the others, with why, in the second
        value."""
        producers = [source, *chain]
        names = [source.name] + [str(b.target) for b in chain]
        shapes = [node_shape(p) for p in producers]
        own = [block_stride(shapes[i], shapes[i + 1]) for i in range(len(chain))]  # type: ignore[arg-type]
        plans, unreachable = [], {}
        for j in range(len(chain)):
            target = shapes[j]                                    # (N, C, H, W) block j reads
            cands, left = [], []
            for k in range(j + 1):
                stride = composed_stride(own[k:j])                # blocks k .. j-1 lie between
                why = reach(shapes[k], target, stride)            # type: ignore[arg-type]
                if why is None:
                    cands.append((names[k], list(stride), target[1] - shapes[k][1]))  # type: ignore
                else:
                    left.append([names[k], why])
            plans.append((names[j + 1], cands))
            if left:
                unreachable[names[j + 1]] = left
        return module_dag(names[0], plans), unreachable


def _between(gm: fx.GraphModule, prev: fx.Node, block: fx.Node) -> str:
    """' but through X (T), ...': the outermost modules between two blocks that do not chain,
    ones that hold neither block (``features.2``, not its 12 ops)."""
    ends = (f"{prev.target}.", f"{block.target}.")
    nodes = list(gm.graph.nodes)
    seen: dict[str, str] = {}
    for n in nodes[nodes.index(prev) + 1: nodes.index(block)]:
        stack = list(n.meta.get("nn_module_stack", {}).values())
        if n.op == "call_module":
            stack.append((str(n.target), type(gm.get_submodule(str(n.target)))))
        own = next(((p, t) for p, t in stack if not any(e.startswith(p + ".") for e in ends)),
                   (n.name, None))
        if n.op != "get_attr":
            seen.setdefault(own[0], getattr(own[1], "__name__", n.op))
    items = [f"{k} ({t})" for k, t in seen.items()]
    return f" but through {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}" if items else ""


def find_modules(gm: fx.GraphModule, modules: Iterable[type | str] | None = None,
                 level: str = "auto") -> ModuleDAG:
    """Run the analysis on ``gm`` (with ``discover_blocks`` first when no ``modules`` are given
    and it has not run) and return the DAG structure it carries now."""
    from .discover_blocks import DiscoverBlocks
    from .driver import run_passes
    todo = [FindModules(modules, level)]
    if modules is None and "blocks" not in (graph_meta.discovery(gm) or {}):
        todo.insert(0, DiscoverBlocks())
    run_passes(gm, todo)
    return carried_dag(gm)
