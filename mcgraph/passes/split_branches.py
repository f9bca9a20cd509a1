"""Rewrite pass: expose the C branches of every ResNeXt block and give them K-hot branch masks.

Requires: a branch-level DAG on the graph (:class:`FindModules`): every block is a grouped
          bottleneck (``conv1``, ``bn1``, ``conv2`` with ``groups = C > 1``, ``bn2``, ``conv3``,
          ``bn3``, ``downsample``), all with the same cardinality C; no masks yet.
Ensures:  every block is a :class:`mcgraph.branches.BranchBlock` over C residual streams (the
          first block reads the stem output, shared), the head reads the streams' mean, and each
          block carries a C x C :class:`BranchMask` with fan-in K (the DAG records it as the
          ``selector`` of the block's out-edges). The original parameters are reused, not copied.
          With ``init='full'`` and K=C the model computes what it computed (checked, 1e-4).

    gm = annotate_shapes(trace(create_model("resnext29_8x8d")), torch.randn(1, 3, 32, 32))
    gm = run_passes(gm, [FindModules(), SplitBranches(fan_in=1, init="random")]).graph_module
"""
from __future__ import annotations

from torch import fx

from ..branches import BranchBlock, stream_mean
from ..ir import carried_dag
from ..masks import INITS, mask_modules
from .base import EXACT, GraphPass, PassResult
from .insert_masks import check_mask_options

BRANCH_INITS = tuple(i for i in INITS if i != "prev")   # 'prev' has no meaning between branches


class SplitBranches(GraphPass):
    name = "split_branches"

    def __init__(self, fan_in: int, init: str = "full", seed: int = 0,
                 mask_grad: str = "normalized"):
        check_mask_options(self.name, fan_in, init, mask_grad, BRANCH_INITS)
        self.fan_in, self.init, self.seed, self.mask_grad = int(fan_in), init, int(seed), mask_grad

    def requires(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        if dag.level != "branch":
            raise self.error("the DAG is module-level; use insert_masks")
        if mask_modules(gm):
            raise self.error(f"{gm._get_name()} already has masks")
        c = _cardinality(gm)
        if self.fan_in > c:
            raise self.error(f"fan-in K={self.fan_in} is larger than the candidates of every "
                             f"module (cardinality C={c})")

    def tolerance_for(self, gm: fx.GraphModule) -> float | None:
        """K=C with every mask full reads every branch: the model computes what it did."""
        return EXACT if (self.init == "full" and self.fan_in == _cardinality(gm)) else None

    def call(self, gm: fx.GraphModule) -> PassResult:
        dag = carried_dag(gm, self.name)
        names = dag.block_names()
        nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
        for i, name in enumerate(names):
            parent, _, leaf = name.rpartition(".")
            bb = BranchBlock(gm.get_submodule(name), name, self.fan_in, self.init, first=(i == 0),
                             seed=self.seed, index=i, grad=self.mask_grad)
            setattr(gm.get_submodule(parent) if parent else gm, leaf, bb)
            dag.set_branch_selector(name, f"{name}.mask", bb.mask.fan_in)
        last = nodes[names[-1]]
        with gm.graph.inserting_after(last):
            merged = gm.graph.call_function(stream_mean, (last,))
        last.replace_all_uses_with(merged, delete_user_cb=lambda u: u is not merged)
        return PassResult(gm, True)

    def ensures(self, gm: fx.GraphModule) -> None:
        for name in carried_dag(gm, self.name).block_names():
            if not isinstance(gm.get_submodule(name), BranchBlock):
                raise self.error("is not a BranchBlock after the pass", name)


def _cardinality(gm: fx.GraphModule) -> int:
    """C, the branches of the first block (FindModules checked that every block has as many)."""
    dag = carried_dag(gm, SplitBranches.name)
    first = dag.block_names()[0]
    return sum(dag.graph.nodes[b]["block"] == first for b in dag.blocks())


def split_branches(gm: fx.GraphModule, fan_in: int, init: str = "full", seed: int = 0,
                   mask_grad: str = "normalized") -> fx.GraphModule:
    """Run :class:`SplitBranches` through the driver on a graph that carries a branch DAG."""
    from .driver import run_passes
    return run_passes(gm, [SplitBranches(fan_in, init, seed, mask_grad)]).graph_module
