"""ModuleDAG: the module-level intermediate representation (networkx inside).

Nodes are modules: ``source`` (what the first block reads: the stem's output), ``block`` (a
residual block) or ``branch`` (one branch of a ResNeXt block, ``<block>/<k>``) and ``head``
(everything after the last block). Edges are candidate connections
``k -> j`` carrying the real-valued mask ``mask``, whether the edge is ``chosen`` (the K-hot
binary value in eval or after freeze) and the adapter (``stride``, ``pad`` channels).

    dag = ModuleDAG.from_graph_module(masked_gm)
    dag.dead_modules()        # blocks no live block or the head reads, transitively
    ModuleDAG.from_json(dag.to_json()) == dag
"""
from __future__ import annotations

import json
from typing import Any

import networkx as nx
from torch import fx

from .masks import MaskConnect

HEAD = "head"


def _eval_hot(mc: MaskConnect) -> "torch.Tensor":
    import torch
    hot = torch.zeros(mc.rows, mc.num_candidates, dtype=torch.bool)
    return hot.scatter_(1, mc.topk_rows(), True)


class ModuleDAG:
    def __init__(self, graph: nx.DiGraph | None = None):
        self.graph = graph if graph is not None else nx.DiGraph()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_graph_module(cls, gm: fx.GraphModule) -> "ModuleDAG":
        """Read the masks of a masked GraphModule (see :func:`mcgraph.passes.insert_masks`)."""
        mods = dict(gm.named_modules())
        from .branches import BranchBlock
        branch_nodes = [n for n in gm.graph.nodes
                        if n.op == "call_module" and isinstance(mods.get(n.target), BranchBlock)]
        if branch_nodes:
            return cls._from_branches(branch_nodes, mods)
        g = nx.DiGraph()
        last = None
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(mods.get(node.target), MaskConnect):
                continue
            mc: MaskConnect = mods[node.target]
            chosen = set(int(i) for i in (mc.topk() if not bool(mc.frozen)
                                          else mc.chosen.cpu().nonzero().flatten()))
            for c in mc.candidates:
                if c not in g:
                    g.add_node(c, kind="source", index=-1)
            g.add_node(mc.target, kind="block", index=0, fan_in=mc.fan_in,
                       frozen=bool(mc.frozen), channels=mc.out_channels)
            values = mc.mask.detach().float().cpu().tolist()
            for k, c in enumerate(mc.candidates):
                g.add_edge(c, mc.target, mask=float(values[k]), chosen=k in chosen,
                           stride=list(mc.strides[k]), pad=mc.out_channels - mc.in_channels[k])
            last = mc.target
        if last is None:
            raise ValueError("ModuleDAG: the GraphModule has no MaskConnect masks")
        for i, n in enumerate(n for n, d in g.nodes(data=True) if d["kind"] == "block"):
            g.nodes[n]["index"] = i
        g.add_node(HEAD, kind="head", index=len(g))
        g.add_edge(last, HEAD, mask=1.0, chosen=True, stride=[1, 1], pad=0)
        return cls(g)

    @classmethod
    def _from_branches(cls, nodes: list[fx.Node], mods: dict) -> "ModuleDAG":
        """Branch level (ResNeXt): node ``<block>/<k>`` per branch; edge (j,k) -> (j+1,i) when
        row i of block j's mask selects branch k (stream i feeds branch i of block j+1); the last
        block's rows are the streams the head averages."""
        g = nx.DiGraph()
        source = nodes[0].args[0].name
        g.add_node(source, kind="source", index=-1)
        idx = 0
        blocks = [mods[n.target] for n in nodes]
        for bb in blocks:
            for k in range(bb.cardinality):
                g.add_node(f"{bb.name}/{k}", kind="branch", index=idx, block=bb.name, branch=k,
                           fan_in=bb.mask.fan_in, frozen=bool(bb.mask.frozen),
                           channels=bb.out_planes)
                idx += 1
        g.add_node(HEAD, kind="head", index=idx)
        for k in range(blocks[0].cardinality):
            g.add_edge(source, f"{blocks[0].name}/{k}", mask=1.0, chosen=True, stride=[1, 1], pad=0)
        for j, bb in enumerate(blocks):
            mc = bb.mask
            hot = (mc.chosen.cpu() if bool(mc.frozen) else _eval_hot(mc)).view(bb.cardinality, -1)
            vals = mc.mask.detach().float().cpu().view(bb.cardinality, -1)
            for i in range(bb.cardinality):
                reader = f"{blocks[j + 1].name}/{i}" if j + 1 < len(blocks) else HEAD
                for k in range(bb.cardinality):
                    src = f"{bb.name}/{k}"
                    old = g.edges[src, reader] if g.has_edge(src, reader) else {"mask": 0.0, "chosen": False}
                    g.add_edge(src, reader, mask=max(old["mask"], float(vals[i, k])),
                               chosen=old["chosen"] or bool(hot[i, k]), stride=[1, 1], pad=0)
        return cls(g)

    # ------------------------------------------------------------------ queries
    @property
    def level(self) -> str:
        return "branch" if any(d["kind"] == "branch" for _, d in self.graph.nodes(data=True)) else "module"

    def blocks(self) -> list[str]:
        """The modules MaskConnect wires: residual blocks, or ResNeXt branches, in order."""
        b = [n for n, d in self.graph.nodes(data=True) if d["kind"] in ("block", "branch")]
        return sorted(b, key=lambda n: self.graph.nodes[n]["index"])

    def candidates(self, node: str) -> list[str]:
        return list(self.graph.predecessors(node))

    def chosen_inputs(self, node: str) -> list[str]:
        return [k for k in self.graph.predecessors(node) if self.graph.edges[k, node]["chosen"]]

    def chosen_graph(self) -> nx.DiGraph:
        return self.graph.edge_subgraph(
            [(a, b) for a, b, d in self.graph.edges(data=True) if d["chosen"]]).copy()

    def live_modules(self) -> set[str]:
        """Modules the head reads, directly or through other live modules.

        At branch level a chosen edge (j,k) -> (j+1,i) means branch k's output enters stream i,
        and every stream reaches the head through the residual path whether or not branch i of
        block j+1 is live; so a branch is live exactly when some row of its block's mask selects
        it (no transitivity)."""
        if self.level == "branch":
            return {n for n, d in self.graph.nodes(data=True) if d["kind"] != "branch"} | {
                a for a, _, d in self.graph.edges(data=True) if d["chosen"]}
        cg = self.chosen_graph()
        return (nx.ancestors(cg, HEAD) | {HEAD}) if HEAD in cg else {HEAD}

    def dead_modules(self) -> list[str]:
        live = self.live_modules()
        return [b for b in self.blocks() if b not in live]

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [{"name": n, **d} for n, d in self.graph.nodes(data=True)],
            "edges": [{"src": a, "dst": b, **d} for a, b, d in self.graph.edges(data=True)],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModuleDAG":
        g = nx.DiGraph()
        for n in data["nodes"]:
            n = dict(n)
            g.add_node(n.pop("name"), **n)
        for e in data["edges"]:
            e = dict(e)
            g.add_edge(e.pop("src"), e.pop("dst"), **e)
        return cls(g)

    @classmethod
    def from_json(cls, text: str) -> "ModuleDAG":
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModuleDAG) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"ModuleDAG({len(self.blocks())} blocks, {self.graph.number_of_edges()} edges, "
                f"{len(self.dead_modules())} dead)")
