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
import torch.nn.functional as F
from torch import fx, nn

from ..branches import BranchBlock, _conv3_per_branch
from ..ir import carried_dag
from .base import EXACT, GraphPass, PassResult


def _bn(bn: nn.BatchNorm2d, ch: torch.Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(len(ch), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        out.weight.copy_(bn.weight[ch])
        out.bias.copy_(bn.bias[ch])
        out.running_mean.copy_(bn.running_mean[ch])
        out.running_var.copy_(bn.running_var[ch])
        out.num_batches_tracked.copy_(bn.num_batches_tracked)
    return out


def _conv(weight: torch.Tensor, cin: int, groups: int, ref: nn.Conv2d | None = None) -> nn.Conv2d:
    k = weight.shape[-1]
    stride, pad = (ref.stride, ref.padding) if ref is not None else (1, 0)
    conv = nn.Conv2d(cin, weight.shape[0], k, stride, pad, groups=groups, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


class SlimBranchBlock(nn.Module):
    """A BranchBlock with only its live branches L; C streams in and out, as before."""

    def __init__(self, bb: BranchBlock, live: list[int]):
        super().__init__()
        c, nl = bb.cardinality, len(live)
        d = bb.conv1.out_channels // c
        ch = torch.cat([torch.arange(k * d, (k + 1) * d) for k in live])
        self.first, self.streams, self.out_planes = bb.first, c, bb.out_planes
        self.live_branches = list(live)
        w1 = bb.conv1.weight.detach()[ch]                                     # (|L|d, in, 1, 1)
        self.conv1 = _conv(w1, bb.in_planes * (1 if bb.first else nl), 1 if bb.first else nl)
        self.bn1 = _bn(bb.bn1, ch)
        self.conv2 = _conv(bb.conv2.weight.detach()[ch], nl * d, nl, bb.conv2)
        self.bn2 = _bn(bb.bn2, ch)
        w3 = _conv3_per_branch(bb.conv3.weight.detach(), c)                  # (C*out, d, 1, 1)
        rows = torch.cat([torch.arange(k * bb.out_planes, (k + 1) * bb.out_planes) for k in live])
        self.conv3 = _conv(w3[rows], nl * d, nl)
        self.bn3, self.downsample = bb.bn3, bb.downsample
        pos = {k: i for i, k in enumerate(live)}
        chosen = bb.mask.chosen.cpu()
        picks = [[pos[int(k)] for k in torch.nonzero(chosen[i]).flatten()] for i in range(c)]
        for r in range(len(picks[0])):                 # gather r: each stream's r-th input
            self.register_buffer(f"gather{r}", torch.tensor([p[r] for p in picks]), persistent=False)
        self.fan_in = len(picks[0])
        self.register_buffer("live", torch.tensor(live), persistent=False)
        self.all_live = nl == c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            h = self.conv1(x)                                                 # (N, |L|d, H, W)
        else:
            xs = x if self.all_live else torch.index_select(x, 1, self.live)  # live streams
            h = self.conv1(xs.reshape(xs.shape[0], -1, *xs.shape[3:]))
        h = F.relu(self.bn1(h))
        h = F.relu(self.bn2(self.conv2(h)))
        t = self.conv3(h)                                                     # (N, |L|*out, H', W')
        t = t.reshape(t.shape[0], -1, self.out_planes, *t.shape[2:])          # (N, |L|, out, H', W')
        p = torch.index_select(t, 1, self.gather0)                            # (N, C, out, H', W')
        for r in range(1, self.fan_in):
            p = p + torch.index_select(t, 1, getattr(self, f"gather{r}"))
        n = p.shape[0]
        p = self.bn3(p.reshape(n * self.streams, *p.shape[2:])).reshape(p.shape)
        if self.first:
            s = x if self.downsample is None else self.downsample(x)
            return F.relu(p + s.unsqueeze(1))
        flat = x.reshape(n * self.streams, *x.shape[2:])
        s = flat if self.downsample is None else self.downsample(flat)
        return F.relu(p + s.reshape(n, self.streams, *s.shape[1:]))


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
