"""Rewrite pass: lay a pruned ResNeXt's C streams out as channels and fold its BatchNorms.

Requires: a branch-level graph pruned by :class:`PruneBranches` (every block a
          :class:`SlimBranchBlock`, the head reading ``stream_mean``), for inference.
Ensures:  every block is a :class:`FusedBranchBlock`. Streams travel between blocks as one
          4-D tensor ``(N, C*out, H, W)`` (stream i = channels [i*out, (i+1)*out)), so no
          Reshape sits between blocks; BN1, BN2 fold into conv1, conv2; BN3 and the K-hot mix
          fold into conv3, which reads, for each stream i, the K live branches row i selects and
          writes the stream directly (a grouped convolution with C groups); the shortcut add and
          the ReLU follow it (onnxruntime fuses Conv+Add+ReLU); the head reads the streams' mean.
          Outputs are unchanged (checked, 1e-4). Parameters stay the pruned model's, BNs folded.

Trade, measured before choosing it: conv1 runs over all C streams and conv3 computes C x K
branch outputs instead of |live|, which costs MACs (the counts say how many), but removes a
gather, a BatchNorm, an add and a ReLU pass over the C*out-channel stream tensor per block, and
every Reshape between blocks (each forces onnxruntime's blocked-layout reorders).

    gm = run_passes(gm, [Freeze(), PruneBranches(), FuseBranches()]).graph_module
"""
from __future__ import annotations

from torch import fx, nn

from ..branch_blocks import FusedBranchBlock, SlimBranchBlock, stream_mean_flat
from ..branches import stream_mean
from ..ir import carried_dag
from .base import EXACT, GraphPass, PassResult


class FuseBranches(GraphPass):
    name = "fuse_branches"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        dag = carried_dag(gm, self.name)
        if dag.level != "branch":
            raise self.error("the model has no branch blocks")
        for name in dag.block_names():
            sb = gm.get_submodule(name)
            if not isinstance(sb, SlimBranchBlock):
                raise self.error("is not pruned; run prune_branches first", name)
            ds = sb.downsample
            if ds is not None and not (isinstance(ds, nn.Sequential) and len(ds) == 2 and
                                       isinstance(ds[0], nn.Conv2d) and ds[0].bias is None and
                                       isinstance(ds[1], nn.BatchNorm2d)):
                raise self.error("has a shortcut other than conv1x1 + BatchNorm; not fused", name)

    def call(self, gm: fx.GraphModule) -> PassResult:
        streams = 0
        for name in carried_dag(gm, self.name).block_names():
            sb = gm.get_submodule(name)
            streams = sb.streams
            parent, _, leaf = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, FusedBranchBlock(sb))
        means = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is stream_mean]
        if len(means) != 1:
            raise self.error(f"expects one stream_mean before the head, found {len(means)}")
        means[0].target, means[0].args = stream_mean_flat, (means[0].args[0], streams)
        gm.delete_all_unused_submodules()
        return PassResult(gm, True)

    def ensures(self, gm: fx.GraphModule) -> None:
        for name in carried_dag(gm, self.name).block_names():
            if not isinstance(gm.get_submodule(name), FusedBranchBlock):
                raise self.error("is not fused after the pass", name)


def fuse_branches(gm: fx.GraphModule) -> fx.GraphModule:
    """Fuse ``gm``'s pruned branch blocks in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [FuseBranches()]).graph_module
