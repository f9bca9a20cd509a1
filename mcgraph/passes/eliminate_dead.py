"""Rewrite pass: remove the blocks that no live block or the head reads (transitively).

Requires: ``gm`` whose masks were lowered (see :func:`lower_masks`) and the ``dag`` read from the
          same model right before lowering (:meth:`ModuleDAG.from_graph_module`).
Ensures:  the DAG's dead modules, the adapter ops that fed only them and their parameters are gone;
          outputs are unchanged. If the graph still reads a module the DAG calls dead, the pass
          refuses (the two disagree) instead of guessing.

    dag = ModuleDAG.from_graph_module(frozen_gm)
    slim = eliminate_dead(lower_masks(frozen_gm), dag)
"""
from __future__ import annotations

from torch import fx

from ..errors import McGraphError
from ..ir import ModuleDAG
from ..masks import MaskConnect

PASS = "eliminate_dead"


def eliminate_dead(gm: fx.GraphModule, dag: ModuleDAG) -> fx.GraphModule:
    if any(isinstance(m, MaskConnect) for m in gm.modules()):
        raise McGraphError(PASS, "the model still has masks; run freeze and lower_masks first")
    dead = set(dag.dead_modules())
    nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for name in dead:
        if name not in nodes:
            raise McGraphError(PASS, f"{name} is in the DAG but not in the graph")
        reader = _live_reader(nodes[name], dead)
        if reader is not None:
            raise McGraphError(PASS, f"{name} is dead in the DAG but '{reader.name}' reads it")
    for name in dag.blocks()[::-1]:
        if name in dead:
            _erase_with_users(gm.graph, nodes[name])
    gm.graph.eliminate_dead_code()        # adapter ops left without readers
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.meta.setdefault("mcgraph", {})["removed"] = sorted(dead, key=dag.blocks().index)
    return gm


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
