"""The modules a compiled ResNeXt runs (made by the branch-level compile passes):

* :class:`SlimBranchBlock` (``prune_branches``): a :class:`~mcgraph.branches.BranchBlock` with
  only its live branches: grouped convolutions over them, sliced BatchNorms, K gathers and adds;
* :class:`FusedBranchBlock` (``fuse_branches``): the same block for inference, its C streams laid
  out as channels and its BatchNorms and K-hot mix folded into the convolutions.

The passes decide and check; these modules compute (docs/design.md §7, §8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .branches import BranchBlock, conv3_per_branch


def _bn(bn: nn.BatchNorm2d, ch: torch.Tensor) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(len(ch), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        out.weight.copy_(bn.weight[ch])
        out.bias.copy_(bn.bias[ch])
        out.running_mean.copy_(bn.running_mean[ch])
        out.running_var.copy_(bn.running_var[ch])
        out.num_batches_tracked.copy_(bn.num_batches_tracked)
    return out


def _slice_conv(weight: torch.Tensor, cin: int, groups: int,
                ref: nn.Conv2d | None = None) -> nn.Conv2d:
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
        self.conv1 = _slice_conv(w1, bb.in_planes * (1 if bb.first else nl), 1 if bb.first else nl)
        self.bn1 = _bn(bb.bn1, ch)
        self.conv2 = _slice_conv(bb.conv2.weight.detach()[ch], nl * d, nl, bb.conv2)
        self.bn2 = _bn(bb.bn2, ch)
        w3 = conv3_per_branch(bb.conv3.weight.detach(), c)                  # (C*out, d, 1, 1)
        rows = torch.cat([torch.arange(k * bb.out_planes, (k + 1) * bb.out_planes) for k in live])
        self.conv3 = _slice_conv(w3[rows], nl * d, nl)
        self.bn3, self.downsample = bb.bn3, bb.downsample
        pos = {k: i for i, k in enumerate(live)}
        chosen = bb.mask.chosen.cpu()
        picks = [[pos[int(k)] for k in torch.nonzero(chosen[i]).flatten()] for i in range(c)]
        for r in range(len(picks[0])):                 # gather r: each stream's r-th input
            self.register_buffer(f"gather{r}", torch.tensor([p[r] for p in picks]),
                                 persistent=False)
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
        t = self.conv3(h)                                             # (N, |L|*out, H', W')
        t = t.reshape(t.shape[0], -1, self.out_planes, *t.shape[2:])  # (N, |L|, out, H', W')
        p = torch.index_select(t, 1, self.gather0)                    # (N, C, out, H', W')
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


def _fold(w: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv(w) followed by ``bn`` in eval mode."""
    fw, fb = fuse_conv_bn_weights(w.detach(), None, bn.running_mean, bn.running_var, bn.eps,
                                  bn.weight.detach(), bn.bias.detach())
    return fw.detach(), fb.detach()


def _bias_conv(w: torch.Tensor, b: torch.Tensor, groups: int, stride=1, padding=0) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[-1], stride, padding,
                     groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return conv


class FusedBranchBlock(nn.Module):
    """A pruned ResNeXt block over streams laid out as channels: (N, C*in, H, W) ->
    (N, C*out, H', W'). The first block reads the stem's (N, in, H, W), one stream shared by
    all."""

    def __init__(self, sb: SlimBranchBlock):
        super().__init__()
        c, live, out = sb.streams, sb.live_branches, sb.out_planes
        self.first, self.streams, self.out_planes = sb.first, c, out
        d = sb.conv2.out_channels // len(live)                        # one branch's width
        w1, b1 = _fold(sb.conv1.weight, sb.bn1)                       # (|L|d, in or in/1, 1, 1)
        if sb.first:
            self.conv1 = _bias_conv(w1, b1, 1)
            self.keep = None
        else:                                  # all C streams (no gather of the wide input)
            in_planes = sb.conv1.in_channels // len(live)
            wc, bc = w1.new_zeros(c * d, in_planes, 1, 1), b1.new_zeros(c * d)
            for i, k in enumerate(live):
                wc[k * d:(k + 1) * d] = w1[i * d:(i + 1) * d]
                bc[k * d:(k + 1) * d] = b1[i * d:(i + 1) * d]
            self.conv1 = _bias_conv(wc, bc, c)
            keep = torch.cat([torch.arange(k * d, (k + 1) * d) for k in live])
            self.register_buffer("keep", keep if len(live) < c else None, persistent=False)
        w2, b2 = _fold(sb.conv2.weight, sb.bn2)
        self.conv2 = _bias_conv(w2, b2, len(live), sb.conv2.stride, sb.conv2.padding)
        # conv3 with BN3 folded: stream i reads the K live branches its row picks, in order
        bn3 = sb.bn3
        scale = bn3.weight.detach() / torch.sqrt(bn3.running_var + bn3.eps)   # (out,)
        shift = bn3.bias.detach() - bn3.running_mean * scale
        w3 = sb.conv3.weight.detach().view(len(live), out, d)                 # branch l: (out, d)
        picks = [[int(getattr(sb, f"gather{r}")[i]) for r in range(sb.fan_in)] for i in range(c)]
        w = torch.stack([torch.cat([w3[p] for p in row], dim=1) for row in picks])  # (C, out, K*d)
        self.conv3 = _bias_conv((w * scale[None, :, None]).reshape(c * out, -1, 1, 1),
                           shift.repeat(c), c)
        self.register_buffer("mix", torch.cat([torch.arange(p * d, (p + 1) * d)
                                               for row in picks for p in row]), persistent=False)
        self.downsample = None
        if sb.downsample is not None:
            conv, bn = sb.downsample[0], sb.downsample[1]
            self.downsample = _bias_conv(*_fold(conv.weight, bn), 1, conv.stride, conv.padding)

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


class OneStreamBlock(nn.Module):
    """A :class:`~mcgraph.branches.BranchBlock` whose every row reads all C branches (K = C):
    its C streams stay equal, so it is the original ResNeXt block on one stream. Parameters
    are the BranchBlock's (shared): training this trains that. (N, in, H, W) -> (N, out, H', W')."""

    def __init__(self, bb: BranchBlock):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = bb.conv1, bb.bn1, bb.conv2, bb.bn2
        self.conv3, self.bn3, self.downsample = bb.conv3, bb.bn3, bb.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn3(self.conv3(h)) + s)
