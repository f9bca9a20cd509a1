"""Branch-level MaskConnect for ResNeXt: C residual streams, C x C K-hot branch masks.

Block j with cardinality C keeps one residual stream per branch (docs/design.md §7):

    T_{j,k}     = W3_k relu(BN2_k(W2_k relu(BN1_k(W1_k x_j^(k)))))      branch k's transform
    x_{j+1}^(i) = relu( shortcut(x_j^(i)) + BN3( sum_k M_j[i,k] T_{j,k} ) )

``M_j`` is C x C with K ones per row: branch i of block j+1 reads, through stream i, the K
branch outputs its row selects. Streams start equal (the stem output) and the head reads their
mean. With K=C every row is all ones, every stream stays equal, and the block computes exactly
torchvision's/Xie's ResNeXt block (conv3 over the concatenated branches is the same sum).
The C transforms run batched: conv1 as a batched matmul over the streams (a grouped 1x1 conv),
the original grouped conv2, conv3 as a batched matmul giving C separate outputs, an einsum with M.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .masked_sum import batch_rows
from .masks import KHotMask, process_grad

_RELUS = {torch.relu, F.relu, torch.relu_, F.relu_, "relu", "relu_"}
_ADDS = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class BottleneckParts:
    """The layers of a grouped bottleneck, found by tracing it (see :func:`bottleneck_parts`)."""
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    conv2: nn.Conv2d
    bn2: nn.BatchNorm2d
    conv3: nn.Conv2d
    bn3: nn.BatchNorm2d
    downsample: nn.Module | None          # conv 1x1 + BatchNorm, or None (identity)


def bottleneck_parts(block: nn.Module) -> BottleneckParts | str:
    """The parts of ``block`` when it computes relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))
    + S(x)) with conv1/conv3 1x1, stride 1, no bias, conv2 grouped and S the identity or conv
    1x1 + BatchNorm (nn.Identity layers ignored), decided by tracing it whatever the attribute
    names; otherwise why not (the branch rewrite runs exactly this computation)."""
    from .residual import trace_alone
    try:
        gm = trace_alone(block)
    except Exception as e:
        return f"cannot be traced alone ({type(e).__name__})"
    mods = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if not _is_identity(n, mods)]
    paths = _residual_paths(nodes, mods)
    if isinstance(paths, str):
        return paths
    f_ops, s_ops = paths
    if len(nodes) != 12 + len(s_ops):              # x, F (8), S, add, relu, output
        return "computes more than F and S (a gate, a scale or drop-path)"
    layer = [mods.get(str(n.target)) if n.op == "call_module" else None for n in f_ops + s_ops]
    c1, b1, r1, c2, b2, r2, c3, b3 = layer[:8]
    pointwise = all(_plain_conv(c) and c.kernel_size == (1, 1) and c.stride == (1, 1)
                    and c.groups == 1 for c in (c1, c3))
    if not (pointwise and _plain_conv(c2) and c2.groups > 1  # type: ignore[union-attr]
            and all(_plain_bn(b) for b in (b1, b2, b3))
            and _is_relu(f_ops[2], mods) and _is_relu(f_ops[5], mods)):
        return ("is not a grouped bottleneck (1x1 conv, grouped conv, 1x1 conv without bias or "
                "dilation, affine BatchNorms)")
    ds = _shortcut(block, layer[8], layer[9], s_ops) if s_ops else None
    if isinstance(ds, str):
        return ds
    return BottleneckParts(c1, b1, c2, b2, c3, b3, ds)  # type: ignore[arg-type]


def _is_identity(n: fx.Node, mods: dict[str, nn.Module]) -> bool:
    return n.op == "call_module" and isinstance(mods[str(n.target)], nn.Identity)


def _skip(n: fx.Node, mods: dict[str, nn.Module]) -> fx.Node:
    """``n``, or the node it forwards through nn.Identity calls."""
    while _is_identity(n, mods):
        n = n.args[0]  # type: ignore[assignment]
    return n


def _is_relu(n: fx.Node, mods: dict[str, nn.Module]) -> bool:
    return (n.op == "call_module" and isinstance(mods[str(n.target)], nn.ReLU)) or (
        n.op in ("call_function", "call_method") and n.target in _RELUS)


def _chain(n: fx.Node, x: fx.Node, mods: dict[str, nn.Module]) -> list[fx.Node] | None:
    """The one-input ops from ``x`` to ``n``, in order; None if ``n`` is not such a chain."""
    ops = []
    while n is not x:
        if len(n.all_input_nodes) != 1:
            return None
        ops.append(n)
        n = _skip(n.all_input_nodes[0], mods)
    return ops[::-1]


def _residual_paths(nodes: list[fx.Node],
                    mods: dict[str, nn.Module]) -> tuple[list[fx.Node], list[fx.Node]] | str:
    """F's ops (8) and S's (0 or 2) when ``nodes`` compute relu(F(x) + S(x)) with F and S chains
    of one-input layers from the input x; otherwise why not."""
    x = nodes[0]
    out = _skip(next(n for n in nodes if n.op == "output").args[0], mods)  # type: ignore[arg-type]
    if not _is_relu(out, mods):
        return "does not end in a ReLU"
    add = _skip(out.all_input_nodes[0], mods)
    ops = [_skip(a, mods) for a in add.all_input_nodes]
    if add.op != "call_function" or add.target not in _ADDS or len(ops) != 2:
        return "is not relu(F(x) + S(x))"
    f_ops, s_ops = (_chain(ops[0], x, mods), _chain(ops[1], x, mods))
    if f_ops is not None and s_ops is not None and len(f_ops) < len(s_ops):
        f_ops, s_ops = s_ops, f_ops
    if f_ops is None or s_ops is None:
        return "has a path that is not a chain of one-input layers (a gate, a scale inside)"
    if len(f_ops) != 8 or len(s_ops) not in (0, 2):
        return "F is not conv-bn-relu-conv-bn-relu-conv-bn or S not identity / conv + bn"
    return f_ops, s_ops


def _shortcut(block: nn.Module, conv: nn.Module | None, bn: nn.Module | None,
              s_ops: list[fx.Node]) -> nn.Module | str:
    """The projection shortcut as ``nn.Sequential(conv, bn)`` (the block's own when it is one,
    not the traced copy), or why it is not conv 1x1 + BatchNorm."""
    if not (_plain_conv(conv) and conv.kernel_size == (1, 1)  # type: ignore[union-attr]
            and conv.groups == 1 and _plain_bn(bn)):  # type: ignore[union-attr]
        return "has a shortcut other than the identity or conv 1x1 + BatchNorm"
    parent = str(s_ops[0].target).rpartition(".")[0]
    seq = block.get_submodule(parent) if parent else None
    if isinstance(seq, nn.Sequential) and list(seq) == [conv, bn]:
        return seq
    return nn.Sequential(conv, bn)  # type: ignore[arg-type]


def _plain_conv(c: nn.Module | None) -> bool:
    """What the branch rewrites rebuild exactly: no bias, no dilation, zero padding."""
    return (isinstance(c, nn.Conv2d) and c.bias is None and c.dilation == (1, 1)
            and c.padding_mode == "zeros")


def _plain_bn(b: nn.Module | None) -> bool:
    return isinstance(b, nn.BatchNorm2d) and b.affine and b.track_running_stats


class KHotMix(torch.autograd.Function):
    """p[:, i] = sum_{k in S_i} t[:, k], S_i the K inputs row i of the K-hot C x C mask selects.

    The mix reads only the K selected streams per row (a copy for K=1; rows that select the
    same set are computed once) instead of a dense C x C einsum. Backward: t's gradient is the
    transposed mix; the straight-through mask gradient dL/dM[i, k] = <g_i, t_k> is one batched
    GEMM over the first ``samples`` items of the batch (times N / samples, an unbiased estimate
    as in mcgraph.masked_sum), then the row-wise gradient mode (:func:`process_grad`)."""

    @staticmethod
    def forward(ctx, mask, rows, mode, samples, t):  # type: ignore[override]
        # t: (N, C, out, H, W); rows: C tuples of K stream indices
        p = torch.empty_like(t, memory_format=torch.contiguous_format)
        done: dict[tuple[int, ...], int] = {}
        for i, sel in enumerate(rows):
            if sel in done:
                p[:, i].copy_(p[:, done[sel]])
                continue
            done[sel] = i
            p[:, i].copy_(t[:, sel[0]])
            for k in sel[1:]:
                p[:, i].add_(t[:, k])
        ctx.rows, ctx.mode, ctx.samples = rows, mode, samples
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(t)
        return p

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        g = g.contiguous()
        gt = None
        if ctx.needs_input_grad[4]:
            gt = torch.empty_like(g)
            seen: set[int] = set()
            for i, sel in enumerate(ctx.rows):
                for k in sel:
                    if k in seen:
                        gt[:, k].add_(g[:, i])
                    else:
                        gt[:, k].copy_(g[:, i])
                        seen.add(k)
            for k in set(range(g.shape[1])) - seen:      # branches no row read: no gradient
                gt[:, k].zero_()
        gmask = None
        if ctx.needs_input_grad[0]:
            (t,) = ctx.saved_tensors
            n, c = g.shape[:2]
            r = batch_rows(n, ctx.samples)
            gr = g[:r].reshape(r, c, -1).float()
            tr = t[:r].reshape(r, c, -1).float()
            gmask = process_grad(torch.bmm(gr, tr.transpose(1, 2)).sum(0) * (n / r), ctx.mode)
        return gmask, None, None, None, gt


class BranchMask(KHotMask):
    """C rows (the streams / next block's branches) x C candidates (this block's branches)."""

    def __init__(self, target: str, cardinality: int, fan_in: int, init: str = "full",
                 seed: int = 0, index: int = 0, grad: str = "normalized"):
        if init == "prev":
            raise ValueError("BranchMask: init 'prev' is for module-level masks; use full, "
                             "uniform or random")
        super().__init__(target, (cardinality, cardinality), fan_in, init, None, seed, index, grad)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Mix the C branch outputs ``t`` (N, C, out, H, W) into the C streams' inputs with the
        K-hot matrix this step uses (:class:`KHotMix`)."""
        rows = tuple(tuple(int(k) for k in r) for r in self.selected_rows())
        learning = self.learning
        if learning:
            self.step += 1
            self._step_h += 1
        mask = self.mask if learning else self.mask.detach()
        return KHotMix.apply(mask, rows, self.grad, self.grad_samples, t)


def conv3_per_branch(w3: torch.Tensor, c: int) -> torch.Tensor:
    """conv3 weight (out, C*d, 1, 1) -> grouped weight (C*out, d, 1, 1): branch k's out columns."""
    out, cd = w3.shape[:2]
    return w3.view(out, c, cd // c).transpose(0, 1).reshape(c * out, cd // c, 1, 1)


class BranchBlock(nn.Module):
    """A grouped bottleneck (:func:`bottleneck_parts`: conv1, bn1, grouped conv2, ..., the
    shortcut as ``downsample``) over C streams.

    Input: ``(N, in, H, W)`` for the first block (one stream, shared), else ``(N, C, in, H, W)``.
    Output: ``(N, C, out, H', W')``. Parameters are the original block's, shared, not copied."""

    def __init__(self, block: nn.Module, name: str, fan_in: int, init: str = "full",
                 first: bool = False, seed: int = 0, index: int = 0, grad: str = "normalized"):
        super().__init__()
        parts = bottleneck_parts(block)
        if isinstance(parts, str):
            raise ValueError(f"BranchBlock: {name} {parts}")
        self.cardinality = c = parts.conv2.groups
        self.conv1, self.bn1, self.conv2, self.bn2 = parts.conv1, parts.bn1, parts.conv2, parts.bn2
        self.conv3, self.bn3, self.downsample = parts.conv3, parts.bn3, parts.downsample
        self.first, self.name = first, name
        self.in_planes, self.out_planes = parts.conv1.in_channels, parts.conv3.out_channels
        self.mask = BranchMask(name, c, fan_in, init, seed, index, grad)

    def transforms(self, x: torch.Tensor) -> torch.Tensor:
        """T: (N, C, out, H', W'), every branch's transform of its own stream.

        conv1 (over C streams) and conv3 (into C outputs) are batched matmuls with the original
        weights: the same FLOPs as grouped 1x1 convolutions, measured 2.1-2.3x faster on CPU."""
        c = self.cardinality
        if self.first:
            h = self.conv1(x)                                              # (N, C*d, H, W)
        else:
            n, _, cin, hh, ww = x.shape
            w1 = self.conv1.weight.view(c, -1, cin)                        # (C, d, in)
            h = torch.matmul(w1, x.reshape(n, c, cin, hh * ww)).view(n, -1, hh, ww)
        h = F.relu(self.bn1(h))
        h = F.relu(self.bn2(self.conv2(h)))                                # (N, C*d, H', W')
        n, cd, hh, ww = h.shape
        w3 = self.conv3.weight.view(self.out_planes, c, cd // c).transpose(0, 1)  # (C, out, d)
        t = torch.matmul(w3, h.reshape(n, c, cd // c, hh * ww))            # (N, C, out, H'W')
        return t.view(n, c, self.out_planes, hh, ww)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 or C, out, H', W'): the first block's single stream broadcasts."""
        if self.first:
            s = x if self.downsample is None else self.downsample(x)
            return s.unsqueeze(1)
        n, c = x.shape[:2]
        flat = x.reshape(n * c, *x.shape[2:])
        s = flat if self.downsample is None else self.downsample(flat)
        return s.view(n, c, *s.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.mask(self.transforms(x))                                  # (N, C, out, H', W')
        n, c = p.shape[:2]
        p = self.bn3(p.view(n * c, *p.shape[2:])).view(p.shape)            # BN3 shared by streams
        # the sum is a new tensor, not a view, so the ReLU can run in place (an in-place op on
        # a view would make autograd copy the whole base in backward, CopySlices)
        return F.relu_(torch.add(p, self.shortcut(x)))


def stream_mean(x: torch.Tensor) -> torch.Tensor:
    """The head reads the mean of the C streams: (N, C, out, H, W) -> (N, out, H, W)."""
    return x.mean(dim=1)
