"""Rewrite pass: delete the branches no live branch reads and lower the branch masks.

Requires: a model rewritten by :class:`SplitBranches` whose branch masks are frozen.
Ensures:  every :class:`BranchBlock` becomes a :class:`SlimBranchBlock` keeping only the live
          branches of the carried DAG (which records the frozen choice and marks the dead
          branches ``removed``): conv1, conv2 and conv3 are grouped convolutions with as many
          groups as live branches, BatchNorms are sliced, and the mixing is K gathers and adds (no
          einsum, no multiply by 0/1). Outputs are unchanged (checked, 1e-4); the parameter count
          falls by the dead branches.

    slim = run_passes(gm, [Freeze(), PruneBranches()]).graph_module
"""
from __future__ import annotations

import torch
from torch import fx

from ..branch_blocks import SlimBranchBlock
from ..branches import BranchBlock
from ..ir import carried_dag
from .base import EXACT, GraphPass, PassResult


class PruneBranches(GraphPass):
    name = "prune_branches"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        if carried_dag(gm, self.name).level != "branch":
            raise self.error("the model has no branch blocks; run split_branches first")
        for m in gm.modules():
            if isinstance(m, BranchBlock) and not m.mask.is_frozen:
                raise self.error(f"the branch mask of {m.name} is not frozen; run freeze first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        dag = carried_dag(gm, self.name)
        dag.record(gm)                                  # the frozen choice outlives the masks
        dead = set(dag.dead_modules())
        changed = False
        for name in dag.block_names():
            bb = gm.get_submodule(name)
            if not isinstance(bb, BranchBlock):
                continue
            live = [k for k in range(bb.cardinality) if f"{name}/{k}" not in dead]
            used = set(int(k) for k in torch.nonzero(bb.mask.chosen.any(dim=0)).flatten())
            if used != set(live):
                raise self.error("the DAG's live branches differ from what the streams read", name)
            parent, _, leaf = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, SlimBranchBlock(bb, live))
            for k in range(bb.cardinality):
                if k not in live:
                    dag.graph.nodes[f"{name}/{k}"]["removed"] = True
            changed = True
        gm.delete_all_unused_submodules()
        return PassResult(gm, changed)

    def ensures(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        dead = set(dag.dead_modules())
        for name in dag.block_names():
            sb = gm.get_submodule(name)
            if not isinstance(sb, SlimBranchBlock):
                raise self.error("is not pruned after the pass", name)
            want = [k for k in range(sb.streams) if f"{name}/{k}" not in dead]
            if sb.live_branches != want:
                raise self.error(f"keeps branches {sb.live_branches}, the DAG says {want}", name)


def prune_branches(gm: fx.GraphModule) -> fx.GraphModule:
    """Prune ``gm``'s dead branches in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [PruneBranches()]).graph_module
