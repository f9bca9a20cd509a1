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

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..branches import stream_mean
from ..ir import carried_dag
from .base import EXACT, GraphPass, PassResult
from .prune_branches import SlimBranchBlock


def _fold(w: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv(w) followed by ``bn`` in eval mode."""
    fw, fb = fuse_conv_bn_weights(w.detach(), None, bn.running_mean, bn.running_var, bn.eps,
                                  bn.weight.detach(), bn.bias.detach())
    return fw.detach(), fb.detach()


def _conv(w: torch.Tensor, b: torch.Tensor, groups: int, stride=1, padding=0) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[-1], stride, padding,
                     groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv


class FusedBranchBlock(nn.Module):
    """A pruned ResNeXt block over streams laid out as channels: (N, C*in, H, W) -> (N, C*out, H', W').
    The first block reads the stem's (N, in, H, W), one stream shared by all."""

    def __init__(self, sb: SlimBranchBlock):
        super().__init__()
        c, live, out = sb.streams, sb.live_branches, sb.out_planes
        self.first, self.streams, self.out_planes = sb.first, c, out
        d = sb.conv2.out_channels // len(live)                        # one branch's width
        w1, b1 = _fold(sb.conv1.weight, sb.bn1)                       # (|L|d, in or in/1, 1, 1)
        if sb.first:
            self.conv1 = _conv(w1, b1, 1)
            self.keep = None
        else:                                  # all C streams (no gather of the wide input)
            in_planes = sb.conv1.in_channels // len(live)
            wc, bc = w1.new_zeros(c * d, in_planes, 1, 1), b1.new_zeros(c * d)
            for i, k in enumerate(live):
                wc[k * d:(k + 1) * d], bc[k * d:(k + 1) * d] = w1[i * d:(i + 1) * d], b1[i * d:(i + 1) * d]
            self.conv1 = _conv(wc, bc, c)
            keep = torch.cat([torch.arange(k * d, (k + 1) * d) for k in live])
            self.register_buffer("keep", keep if len(live) < c else None, persistent=False)
        w2, b2 = _fold(sb.conv2.weight, sb.bn2)
        self.conv2 = _conv(w2, b2, len(live), sb.conv2.stride, sb.conv2.padding)
        # conv3 with BN3 folded: stream i reads the K live branches its row picks, in order
        bn3 = sb.bn3
        scale = bn3.weight.detach() / torch.sqrt(bn3.running_var + bn3.eps)   # (out,)
        shift = bn3.bias.detach() - bn3.running_mean * scale
        w3 = sb.conv3.weight.detach().view(len(live), out, d)                 # branch l: (out, d)
        picks = [[int(getattr(sb, f"gather{r}")[i]) for r in range(sb.fan_in)] for i in range(c)]
        w = torch.stack([torch.cat([w3[p] for p in row], dim=1) for row in picks])  # (C, out, K*d)
        self.conv3 = _conv((w * scale[None, :, None]).reshape(c * out, -1, 1, 1),
                           shift.repeat(c), c)
        self.register_buffer("mix", torch.cat([torch.arange(p * d, (p + 1) * d)
                                               for row in picks for p in row]), persistent=False)
        self.downsample = None
        if sb.downsample is not None:
            conv, bn = sb.downsample[0], sb.downsample[1]
            self.downsample = _conv(*_fold(conv.weight, bn), 1, conv.stride, conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))                                      # (N, C*d or |L|d, H, W)
        if self.keep is not None:
            h = torch.index_select(h, 1, self.keep)                   # live branches only
        h = F.relu(self.conv2(h))                                      # (N, |L|d, H', W')
        t = self.conv3(torch.index_select(h, 1, self.mix))             # (N, C*out, H', W')
        if self.first:
            s = x if self.downsample is None else self.downsample(x)  # (N, out, H', W')
            return F.relu(t + torch.cat([s] * self.streams, dim=1))    # every stream reads it
        if self.downsample is None:
            return F.relu(t + x)
        # one projection for every stream: a grouped conv whose weight is repeated at run time
        # (the file stores it once; a batch-folding Reshape would leave the blocked layout)
        ds, c = self.downsample, self.streams
        return F.relu(t + F.conv2d(x, ds.weight.repeat(c, 1, 1, 1), ds.bias.repeat(c), ds.stride,
                                   ds.padding, groups=c))


def stream_mean_flat(x: torch.Tensor, streams: int) -> torch.Tensor:
    """(N, C*out, H, W) -> (N, out, H, W): the mean of the C streams laid out as channels."""
    n, _, h, w = x.shape
    return x.reshape(n, streams, -1, h, w).mean(dim=1)


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
