"""Analysis pass: keep the residual candidates that are called once on the network's main path.

Requires: ``gm`` traced by :func:`mcgraph.tracing.trace` without ``modules`` (every module of
          residual form is a leaf and :func:`mcgraph.graph_meta.discovery` holds the candidates
          and the verdicts of the structural search, :mod:`mcgraph.residual`), with shapes
          (:func:`mcgraph.tracing.annotate_shapes`).
Ensures:  ``discovery["blocks"]``: the candidates that are called exactly once, lie on the
          main path (every path from the input to the output passes through them: they
          dominate the output) and read and return 4-D tensors, in graph order; every other
          candidate's verdict says why not. The graph is not changed.

    gm = annotate_shapes(trace(model), torch.randn(1, 3, 64, 64))
    run_passes(gm, [DiscoverBlocks()])
    graph_meta.discovery(gm)["blocks"]      # ['layer1.0', 'layer1.1', ...]
"""
from __future__ import annotations

import networkx as nx
from torch import fx

from .. import graph_meta
from ..residual import Verdict
from ..tracing import node_shape
from .base import GraphPass, PassResult


def main_path(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes every path from the (first) input to the output passes through."""
    g = nx.DiGraph()
    for n in gm.graph.nodes:
        g.add_node(n)
        for a in n.all_input_nodes:
            g.add_edge(a, n)
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    out = next(n for n in gm.graph.nodes if n.op == "output")
    idom = nx.immediate_dominators(g, x)
    if out not in idom:
        return set()
    path, n = {out}, out
    while n is not x:             # (networkx >= 3.5 leaves the start out of idom)
        n = idom[n]
        path.add(n)
    return path


class DiscoverBlocks(GraphPass):
    name = "discover_blocks"

    def requires(self, gm: fx.GraphModule) -> None:
        if "candidates" not in (graph_meta.discovery(gm) or {}):
            raise self.error("the graph carries no residual candidates; trace it with "
                             "mcgraph.tracing.trace(model) (no modules=)")
        if not any("tensor_meta" in n.meta for n in gm.graph.nodes):
            raise self.error("the graph has no shapes; run annotate_shapes first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        disc = graph_meta.discovery(gm) or {}
        calls: dict[str, list[fx.Node]] = {}
        for n in gm.graph.nodes:
            if n.op == "call_module":
                calls.setdefault(str(n.target), []).append(n)
        main = main_path(gm)
        why: dict[str, tuple[str, int]] = {}
        for name in disc["candidates"]:
            ns = calls.get(name, [])
            if not ns:
                why[name] = ("never called by the network's forward", 6)
            elif len(ns) > 1:
                why[name] = (f"called {len(ns)} times; a block is called once", 7)
            elif ns[0] not in main:
                why[name] = ("not on the main path (the output does not depend on it alone: "
                             "it sits on a side branch)", 8)
            else:
                shapes = [node_shape(a) for a in ns[0].all_input_nodes] + [node_shape(ns[0])]
                if len(ns[0].all_input_nodes) != 1 or any(s is None or len(s) != 4 for s in shapes):
                    why[name] = (f"reads and returns {shapes}; a block maps one (N, C, H, W) "
                                 "tensor to another", 6)
        order = {str(n.target): i for i, n in enumerate(gm.graph.nodes) if n.op == "call_module"}
        disc["blocks"] = sorted((c for c in disc["candidates"] if c not in why), key=order.get)
        disc["verdicts"] = [Verdict(v.module, v.type, False, *why[v.module]) if v.module in why
                            else v for v in disc["verdicts"]]
        return PassResult(gm, False)


def nearest(verdicts: list[Verdict], n: int = 3) -> str:
    """The ``n`` failed candidates that came nearest to being blocks, for one-line refusals."""
    near = sorted((v for v in verdicts if not v.block), key=lambda v: -v.rank)[:n]
    return "; ".join(f"{v.module} ({v.type}): {v.reason}" for v in near) or "no submodules"
