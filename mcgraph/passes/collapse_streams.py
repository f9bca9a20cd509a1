"""Rewrite pass: a branch-level model whose masks all read every branch, on one stream.

Requires: a branch-level graph (:class:`SplitBranches`) whose branch masks are frozen with every
          row reading all C branches (K = C: Fixed-Full).
Ensures:  every :class:`~mcgraph.branches.BranchBlock` is a
          :class:`~mcgraph.branch_blocks.OneStreamBlock` sharing its parameters and the head
          reads the single stream: the original ResNeXt, computed once instead of on C equal
          streams. Outputs are unchanged (checked, 1e-4). The trainer trains Fixed-Full on it.

    view = run_passes(view, [CollapseStreams()]).graph_module
"""
from __future__ import annotations

from torch import fx

from ..branch_blocks import OneStreamBlock
from ..branches import BranchBlock, stream_mean
from ..ir import carried_dag
from .base import EXACT, GraphPass, PassResult


def all_full(gm: fx.GraphModule) -> bool:
    """Every BranchBlock's mask frozen with all its rows reading every branch."""
    blocks = [m for m in gm.modules() if isinstance(m, BranchBlock)]
    return bool(blocks) and all(b.mask.is_frozen and bool(b.mask.eval_binary().all())
                                for b in blocks)


class CollapseStreams(GraphPass):
    name = "collapse_streams"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        if carried_dag(gm, self.name).level != "branch":
            raise self.error("the model has no branch blocks")
        if not all_full(gm):
            raise self.error("needs every branch mask frozen to all C branches (K = C)")

    def call(self, gm: fx.GraphModule) -> PassResult:
        dag = carried_dag(gm, self.name)
        dag.record(gm)                                  # the frozen choice outlives the masks
        for name in dag.block_names():
            parent, _, leaf = name.rpartition(".")
            bb = gm.get_submodule(name)
            setattr(gm.get_submodule(parent) if parent else gm, leaf, OneStreamBlock(bb))
        for n in list(gm.graph.nodes):
            if n.op == "call_function" and n.target is stream_mean:
                n.replace_all_uses_with(n.args[0])
                gm.graph.erase_node(n)
        return PassResult(gm, True)

    def ensures(self, gm: fx.GraphModule) -> None:
        if any(isinstance(m, BranchBlock) for m in gm.modules()):
            raise self.error("left a BranchBlock")
