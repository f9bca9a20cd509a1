"""ModuleDAG: the module-level intermediate representation (networkx inside), carried on the graph.

The DAG's *structure* is carried on the graph (:func:`mcgraph.graph_meta.dag`):
:func:`find_modules` writes it, rewrite passes update it, and everything downstream
(dead-module elimination, branch pruning,
``inspect``, the plot, checkpoints) reads it from there. Mask *values* stay in the mask
parameters (they change every step); :func:`dag_of` reads them when asked, so a DAG never goes
stale. Passes that remove masks (``lower_masks``, ``prune_branches``) first :meth:`record
<ModuleDAG.record>` the frozen choice into the structure, so the DAG survives the masks.

Nodes: ``source`` (what the first block reads), ``block`` (a residual block) or ``branch``
(branch k of a ResNeXt block, ``<block>/<k>``), and ``head``. Edges are candidate connections
with their adapter (``stride``, ``pad`` channels), the mask module that selects them
(``selector``, a submodule path) and the mask entries ``[row, col]`` that do; ``fixed`` edges are
always read. A snapshot (``dag_of``) adds ``mask`` (m~) and ``chosen`` to every edge and
``frozen`` to every block.

    dag = dag_of(masked_gm)
    dag.dead_modules()        # blocks no live block or the head reads, transitively
    ModuleDAG.from_json(dag.to_json()) == dag
"""
from __future__ import annotations

import copy
import json
from typing import Any

import networkx as nx
from torch import fx, nn

from .errors import McGraphError
from .masks import KHotMask, MaskConnect

HEAD = "head"


class ModuleDAG:
    def __init__(self, graph: nx.DiGraph | None = None):
        self.graph = graph if graph is not None else nx.DiGraph()

    # ------------------------------------------------------------------ structure
    @property
    def level(self) -> str:
        return self.graph.graph.get("level") or (
            "branch" if any(d["kind"] == "branch" for _, d in self.graph.nodes(data=True))
            else "module")

    def blocks(self) -> list[str]:
        """The modules MaskConnect wires: residual blocks, or ResNeXt branches, in order."""
        b = [n for n, d in self.graph.nodes(data=True) if d["kind"] in ("block", "branch")]
        return sorted(b, key=lambda n: self.graph.nodes[n]["index"])

    def block_names(self) -> list[str]:
        """Residual blocks in order (at branch level: the blocks the branches belong to)."""
        if self.level == "module":
            return self.blocks()
        return list(dict.fromkeys(self.graph.nodes[b]["block"] for b in self.blocks()))

    def candidates(self, node: str) -> list[str]:
        return sorted(self.graph.predecessors(node), key=lambda k: self._col(k, node))

    def _col(self, src: str, dst: str) -> tuple[int, int]:
        e = self.graph.edges[src, dst]
        return (min(c for _, c in e["entries"]) if e.get("entries") else -1,
                self.graph.nodes[src]["index"])

    def selectors(self) -> list[str]:
        """Paths of the mask modules that select edges, in graph order."""
        return list(dict.fromkeys(d["selector"] for _, _, d in self.graph.edges(data=True)
                                  if d.get("selector")))

    # ------------------------------------------------------------------ values
    def with_values(self, gm: nn.Module) -> "ModuleDAG":
        """A copy whose edges carry ``mask`` and ``chosen`` and whose blocks carry ``frozen``, read
        from ``gm``'s masks; edges whose mask is gone keep what :meth:`record` stored."""
        snap = ModuleDAG(copy.deepcopy(self.graph))
        snap._fill(gm, keep=False)
        return snap

    def record(self, gm: nn.Module) -> None:
        """Store the masks' current values and eval choice in the structure (before removing
        them)."""
        self._fill(gm, keep=True)

    def _fill(self, gm: nn.Module, keep: bool) -> None:
        mods = dict(gm.named_modules())
        hot = {p: (mods[p].eval_binary(),
                   mods[p].mask.detach().float().cpu().view(mods[p].rows, -1),
                   mods[p].is_frozen)
               for p in self.selectors() if isinstance(mods.get(p), KHotMask)}
        frozen: dict[str, bool] = {}
        for a, b, d in self.graph.edges(data=True):
            if d.get("fixed"):
                d["mask"], d["chosen"] = 1.0, True
            elif d.get("selector") in hot:
                h, v, fz = hot[d["selector"]]
                d["chosen"] = any(bool(h[r, c]) for r, c in d["entries"])
                d["mask"] = max(float(v[r, c]) for r, c in d["entries"])
                frozen[b if self.level == "module" else a] = fz
            elif not keep:
                d.setdefault("chosen", None)      # no mask and nothing recorded: undecided
                d.setdefault("mask", None)
        for n, d in self.graph.nodes(data=True):
            if d["kind"] in ("block", "branch"):
                d["frozen"] = frozen.get(n, d.get("frozen", False))

    # ------------------------------------------------------------------ queries (need values)
    def chosen_inputs(self, node: str) -> list[str]:
        return [k for k in self.candidates(node) if self._chosen(k, node)]

    def _chosen(self, a: str, b: str) -> bool:
        c = self.graph.edges[a, b].get("chosen")
        if c is None:
            raise McGraphError("ModuleDAG", f"edge {a} -> {b} is undecided: read the DAG with "
                                            "dag_of(gm) while the masks exist")
        return bool(c)

    def chosen_graph(self) -> nx.DiGraph:
        return self.graph.edge_subgraph([(a, b) for a, b in self.graph.edges
                                         if self._chosen(a, b)]).copy()

    def live_modules(self) -> set[str]:
        """Modules the head reads, directly or through other live modules.

        At branch level a chosen edge (j,k) -> (j+1,i) means branch k's output enters stream i,
        and every stream reaches the head through the residual path whether or not branch i of
        block j+1 is live; so a branch is live exactly when some row of its block's mask selects
        it (no transitivity)."""
        if self.level == "branch":
            return {n for n, d in self.graph.nodes(data=True) if d["kind"] != "branch"} | {
                a for a, b in self.graph.edges if self._chosen(a, b)}
        cg = self.chosen_graph()
        return (nx.ancestors(cg, HEAD) | {HEAD}) if HEAD in cg else {HEAD}

    def dead_modules(self) -> list[str]:
        live = self.live_modules()
        return [b for b in self.blocks() if b not in live]

    def entry(self, node: str) -> dict[str, Any]:
        """One module's connectivity, as checkpoints and ``inspect`` show it."""
        cands = self.candidates(node)
        return {"module": node, "candidates": cands,
                "values": [self.graph.edges[c, node]["mask"] for c in cands],
                "chosen": self.chosen_inputs(node),
                "frozen": self.graph.nodes[node].get("frozen", False)}

    # ------------------------------------------------------------------ rebuilt from the masks
    @classmethod
    def from_graph_module(cls, gm: fx.GraphModule) -> "ModuleDAG":
        """Rebuild the DAG (with values) from the mask modules alone, independently of
        ``gm.meta``: what the passes must keep the carried DAG equal to (tests, the driver)."""
        from .branches import BranchBlock
        mods = dict(gm.named_modules())
        nodes = [n for n in gm.graph.nodes if n.op == "call_module"]
        branch = [n for n in nodes if isinstance(mods[n.target], BranchBlock)]
        if branch:
            dag = branch_dag(branch[0].args[0].name, [(str(n.target), mods[n.target].cardinality)
                                                      for n in branch])
        else:
            masks = [(str(n.target), mods[n.target]) for n in nodes
                     if isinstance(mods[n.target], MaskConnect)]
            if not masks:
                raise McGraphError("ModuleDAG", "the GraphModule has no MaskConnect masks")
            dag = module_dag(masks[0][1].candidates[0], [
                (mc.target, [(c, list(mc.strides[k]), mc.out_channels - mc.in_channels[k])
                             for k, c in enumerate(mc.candidates)]) for _, mc in masks])
            for path, mc in masks:
                dag.set_selector(mc.target, path, mc.fan_in)
        if branch:
            for n in branch:
                dag.set_branch_selector(str(n.target), f"{n.target}.mask",
                                        mods[n.target].mask.fan_in)
        return dag.with_values(gm)

    def set_selector(self, block: str, path: str, fan_in: int) -> None:
        """Module level: ``block``'s candidate edges are selected by the mask at ``path``."""
        for c in self.candidates(block):
            self.graph.edges[c, block]["selector"] = path
        self.graph.nodes[block]["fan_in"] = int(fan_in)

    def set_branch_selector(self, block: str, path: str, fan_in: int) -> None:
        """Branch level: edges out of ``block``'s branches are selected by its C x C mask."""
        for b in self.blocks():
            if self.graph.nodes[b]["block"] == block:
                self.graph.nodes[b]["fan_in"] = int(fan_in)
                for _, _, d in self.graph.out_edges(b, data=True):
                    d["selector"] = path

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "nodes": [{"name": n, **d} for n, d in self.graph.nodes(data=True)],
            "edges": [{"src": a, "dst": b, **d} for a, b, d in self.graph.edges(data=True)],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModuleDAG":
        g = nx.DiGraph(level=data.get("level"))
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
        return isinstance(other, ModuleDAG) and _canon(self.to_dict()) == _canon(other.to_dict())

    def __repr__(self) -> str:
        return (f"ModuleDAG({self.level}, {len(self.blocks())} modules, "
                f"{self.graph.number_of_edges()} edges)")


def _canon(d: dict[str, Any]) -> str:
    return json.dumps({**d, "nodes": sorted(d["nodes"], key=lambda n: n["name"]),
                       "edges": sorted(d["edges"], key=lambda e: (e["src"], e["dst"]))},
                      sort_keys=True)


def module_dag(source: str,
               blocks: list[tuple[str, list[tuple[str, list[int], int]]]]) -> ModuleDAG:
    """Module level: ``blocks`` in order, each with its candidates ``(name, stride, pad)``; the
    head reads the last block (a fixed edge)."""
    g = nx.DiGraph(level="module")
    g.add_node(source, kind="source", index=-1)
    for i, (name, cands) in enumerate(blocks):
        g.add_node(name, kind="block", index=i, fan_in=None)
        for col, (c, stride, pad) in enumerate(cands):
            g.add_edge(c, name, stride=list(stride), pad=int(pad), selector=None,
                       entries=[[0, col]], fixed=False)
    g.add_node(HEAD, kind="head", index=len(blocks))
    g.add_edge(blocks[-1][0], HEAD, stride=[1, 1], pad=0, selector=None, entries=[], fixed=True)
    return ModuleDAG(g)


def branch_dag(source: str, blocks: list[tuple[str, int]]) -> ModuleDAG:
    """Branch level: edge (j,k) -> (j+1,i) when row i of block j's C x C mask can select branch
    k (stream i feeds branch i of block j+1); the last block's rows are the streams the head
    averages; the source feeds every branch of the first block (fixed edges)."""
    g = nx.DiGraph(level="branch")
    g.add_node(source, kind="source", index=-1)
    idx = 0
    for name, c in blocks:
        for k in range(c):
            g.add_node(f"{name}/{k}", kind="branch", index=idx, block=name, branch=k, fan_in=None)
            idx += 1
    g.add_node(HEAD, kind="head", index=idx)
    first, c0 = blocks[0]
    for k in range(c0):
        g.add_edge(source, f"{first}/{k}", stride=[1, 1], pad=0, selector=None, entries=[],
                   fixed=True)
    for j, (name, c) in enumerate(blocks):
        for k in range(c):
            if j + 1 < len(blocks):
                for i in range(c):
                    g.add_edge(f"{name}/{k}", f"{blocks[j + 1][0]}/{i}", stride=[1, 1], pad=0,
                               selector=None, entries=[[i, k]], fixed=False)
            else:
                g.add_edge(f"{name}/{k}", HEAD, stride=[1, 1], pad=0, selector=None,
                           entries=[[i, k] for i in range(c)], fixed=False)
    return ModuleDAG(g)


def carried_dag(gm: nn.Module, where: str = "mcgraph") -> ModuleDAG:
    """The structure a pass reads and updates in place (:func:`mcgraph.graph_meta.dag`)."""
    from . import graph_meta
    dag = graph_meta.dag(gm)
    if not isinstance(dag, ModuleDAG):
        raise McGraphError(where, f"{type(gm).__name__} carries no module DAG; run find_modules "
                                  "(mcgraph.rewrite does) first")
    return dag


def dag_of(gm: nn.Module) -> ModuleDAG:
    """A snapshot of ``gm``'s DAG with the current mask values (see the module docstring)."""
    return carried_dag(gm).with_values(gm)
