"""What each block reads in a lowered graph, walked back through the adapter/add/scale ops.

Passes that lower or delete masks use it in ``ensures``: the graph must read exactly the DAG's
chosen edges, so the carried DAG and the graph cannot drift apart once the masks are gone.
"""
from __future__ import annotations

from torch import fx

from ..ir import carried_dag
from .base import GraphPass


def graph_reads(gm: fx.GraphModule) -> dict[str, set[str]]:
    """``{block: producers its input is computed from}`` for the DAG's blocks present in ``gm``."""
    dag = carried_dag(gm)
    blocks = set(dag.blocks())
    source = next(n for n, d in dag.graph.nodes(data=True) if d["kind"] == "source")
    out: dict[str, set[str]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in blocks:
            continue
        found, stack, seen = set(), [a for a in node.args if isinstance(a, fx.Node)], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.name == source or (n.op == "call_module" and str(n.target) in blocks):
                found.add(n.name if n.name == source else str(n.target))
            elif n.op == "get_attr":
                continue                                  # a constant (an adapter's weight)
            elif n.op in ("call_function", "call_method"):
                stack.extend(a for a in n.args if isinstance(a, fx.Node))
            else:
                found.add(n.name)
        out[str(node.target)] = found
    return out


def check_reads(p: GraphPass, gm: fx.GraphModule) -> None:
    """Raise naming ``p`` and the block when the graph's reads differ from the DAG's choice."""
    dag = carried_dag(gm, p.name).with_values(gm)
    for block, found in graph_reads(gm).items():
        want = set(dag.chosen_inputs(block))
        if found != want:
            raise p.error(f"reads {sorted(found)} in the graph but the DAG chose {sorted(want)}",
                          block)
