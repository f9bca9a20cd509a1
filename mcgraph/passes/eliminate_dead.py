"""Rewrite pass: remove the blocks that no live block or the head reads (transitively).

Requires: a module-level graph whose masks were lowered (:class:`LowerMasks`), so the carried
          DAG records the frozen choice.
Ensures:  the DAG's dead modules, the adapter ops that fed only them and their parameters are
          gone (the DAG marks them ``removed``); every live block is still there and reads
          exactly its chosen inputs; outputs are unchanged (checked, 1e-4). If the graph still
          reads a module the DAG calls dead, the pass refuses instead of guessing.

    slim = run_passes(gm, [Freeze(), LowerMasks(), EliminateDead()]).graph_module
"""
from __future__ import annotations

from torch import fx

from ..ir import carried_dag
from ..masks import MaskConnect
from .base import EXACT, GraphPass, PassResult
from .reads import check_reads


class EliminateDead(GraphPass):
    name = "eliminate_dead"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        if dag.level != "module":
            raise self.error("dead branches are removed by prune_branches")
        if any(isinstance(m, MaskConnect) for m in gm.modules()):
            raise self.error("the model still has masks; run freeze and lower_masks first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        dag = carried_dag(gm, self.name)
        dead = set(dag.with_values(gm).dead_modules())
        nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
        gone = [b for b in dead if b not in nodes]
        if any(not dag.graph.nodes[b].get("removed") for b in gone):
            raise self.error(f"{sorted(gone)[0]} is in the DAG but not in the graph")
        for name in dead - set(gone):
            reader = _live_reader(nodes[name], dead)
            if reader is not None:
                raise self.error(f"is dead in the DAG but '{reader.name}' reads it", name)
        for name in dag.blocks()[::-1]:
            if name in dead and name in nodes:
                _erase_with_users(gm.graph, nodes[name])
                dag.graph.nodes[name]["removed"] = True
        gm.graph.eliminate_dead_code()        # adapter ops left without readers
        gm.delete_all_unused_submodules()
        return PassResult(gm, len(dead) > len(gone))

    def ensures(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name).with_values(gm)
        present = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
        dead = set(dag.dead_modules())
        for b in dag.blocks():
            if (b in present) == (b in dead):
                raise self.error("is dead but still in the graph" if b in dead else
                                 "is live but missing from the graph", b)
        check_reads(self, gm)


def _live_reader(node: fx.Node, dead: set[str]) -> fx.Node | None:
    """The first live module (or the output) that ``node``'s value flows into, if any."""
    stack, seen = list(node.users), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_module" and str(n.target) in dead:
            continue
        if n.op in ("call_module", "output"):
            return n
        stack.extend(n.users)
    return None


def _erase_with_users(graph: fx.Graph, node: fx.Node) -> None:
    """Erase ``node`` and the ops that only carry its value into other dead modules."""
    for u in list(node.users):
        _erase_with_users(graph, u)
    graph.erase_node(node)


def eliminate_dead(gm: fx.GraphModule) -> fx.GraphModule:
    """Remove ``gm``'s dead blocks in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [EliminateDead()]).graph_module
