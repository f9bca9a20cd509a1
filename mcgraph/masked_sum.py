"""The masked sum's autograd op: add the K chosen inputs; straight-through mask gradient for all.

    x = MaskedSum.apply(mask, chosen, strides, out_channels, mode, scale, samples, *ys)

Forward: ``x = scale * sum_{k in chosen} adapt(y_k)`` (N, C, H, W); only the K chosen are read.
Backward: the chosen inputs get ``scale * g`` (un-adapted); every candidate k gets the
straight-through mask gradient ``dL/dm_k = <scale * g, adapt(y_k)>`` (docs/design.md §3), from
the y_k that are alive anyway: candidates of the block's own shape are saved by reference; adapted
(earlier-stage) candidates are read from compact stacks shared by the blocks of a stage
(:class:`_Stacks`).

Cost. Block j reads j earlier outputs in its backward, so the reads are O(n^2) in depth and
bandwidth-bound; the stacks make the cross-stage ones contiguous and small. ``samples``
(default None: the whole batch) bounds them further: the dot products run over the first
``samples`` items of the batch, times N / samples. A shuffled loader puts the items of a batch
in random order, so this is an unbiased estimate of the full-batch gradient, and it reads a
contiguous prefix of each tensor (NCHW and channels-last alike: the batch is the outermost
dimension). It is noisier: see docs/results.md ``grad_samples``.
Products are formed and accumulated in fp32 whatever the activations' dtype: under autocast
fp16 with a 65536 loss scale, ``g * y`` in fp16 overflows.
"""
from __future__ import annotations

import weakref

import torch

Stride = tuple[int, int]


def view(y: torch.Tensor, stride: Stride) -> torch.Tensor:
    """``y`` subsampled in space by ``stride`` (a view; no copy)."""
    sh, sw = stride
    return y if sh == 1 and sw == 1 else y[:, :, ::sh, ::sw]


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view in memory order when ``t`` is dense (NCHW or channels-last), else None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)       # a view: NHWC is this memory's order
    return None


def dot32(g: torch.Tensor, y: torch.Tensor, stride: Stride) -> torch.Tensor:
    """<g, adapt(y)> in fp32 (a 0-d tensor). Padded channels are zero, so only the first C_y
    channels of ``g`` count. Dense operands of one layout: one BLAS dot (no temporaries in
    fp32); otherwise (sliced channels, strided space) an fp32 product and sum."""
    v = view(y, stride)
    c = v.shape[1]
    gg = g if c == g.shape[1] else g[:, :c]
    a, b = _flat(gg), _flat(v)
    if a is not None and b is not None and gg.stride() == v.stride():
        return torch.dot(a.float(), b.float())
    return torch.sum(gg.float() * v.float())


def candidate_grads(g: torch.Tensor, ys: tuple[torch.Tensor, ...], strides: tuple[Stride, ...],
                    samples: int | None = None) -> torch.Tensor:
    """(n,) fp32: <g, adapt(y_k)> for every candidate k, over the first ``samples`` items of the
    batch scaled by N / samples (all items when None or >= N). The reference formulation: the
    op itself reads cross-stage candidates from shared compact stacks (:class:`_Stacks`)."""
    n = g.shape[0]
    r = batch_rows(n, samples)
    gs = g if r == n else g[:r]
    out = torch.stack([dot32(gs, y if r == n else y[:r], s) for y, s in zip(ys, strides)])
    return out if r == n else out * (n / r)


def batch_rows(n: int, samples: int | None) -> int:
    """How many leading items of a batch of ``n`` the mask gradient reads."""
    return n if samples is None or samples >= n else max(1, int(samples))


class _Stacks:
    """Compact fp32 copies of adapted candidates, shared by every block that reads them.

    Every block of a stage reads the same earlier-stage outputs, subsampled in space: reading
    them strided and channel-sliced from each block's backward costs most of the masked step.
    Instead the first block to need a group (same stride and channels) stacks the first ``r``
    items of each, subsampled, into one contiguous (G, r, C, H, W) tensor; later blocks of the
    forward reuse it (it is found by the identity and version of its inputs, held weakly so
    that nothing outlives the step), and each backward reads it in one matrix-vector product.
    It is r/N x 1/stride^2 of the inputs' size: a few percent of the saved activations."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[list, list[int], weakref.ref]] = {}

    def get(self, ys: list[torch.Tensor], stride: Stride, r: int) -> torch.Tensor:
        key = (stride, r, tuple(id(y) for y in ys))
        hit = self._entries.get(key)
        if hit is not None:
            refs, versions, buf = hit
            stack = buf()
            if stack is not None and all(w() is y and y._version == v
                                         for w, y, v in zip(refs, ys, versions)):
                return stack
        first = view(ys[0][:r], stride)
        stack = torch.empty((len(ys), *first.shape), dtype=torch.float32, device=first.device)
        for i, y in enumerate(ys):                   # (G, r, C, H, W), NCHW whatever y's layout
            stack[i].copy_(view(y[:r], stride))
        if len(self._entries) > 256:                 # drop entries whose stack is gone
            self._entries = {k: e for k, e in self._entries.items() if e[2]() is not None}
        self._entries[key] = ([weakref.ref(y) for y in ys], [y._version for y in ys],
                              weakref.ref(stack))
        return stack


STACKS = _Stacks()


def _plan(ys: tuple[torch.Tensor, ...], strides: tuple[Stride, ...], out_channels: int):
    """Candidates read directly (same shape as the block input) and groups of adapted ones,
    keyed by (stride, channels)."""
    direct, groups = [], {}
    for k, (y, s) in enumerate(zip(ys, strides)):
        if s == (1, 1) and y.shape[1] == out_channels:
            direct.append(k)
        else:
            groups.setdefault((s, y.shape[1]), []).append(k)
    return direct, groups


def process_grad(g: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Row-wise mask-gradient modes (rows = independent K-hot selections); see KHotMask."""
    if mode is None or mode == "raw":
        return g
    g = g - g.mean(dim=-1, keepdim=True)
    if mode == "normalized" and g.shape[-1] > 1:
        g = g / (g.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-12)
    return g


class MaskedSum(torch.autograd.Function):
    """See the module docstring. ``mode``: the row-wise mask-gradient mode (:func:`process_grad`,
    :class:`mcgraph.masks.KHotMask`); ``scale``: 1/K for 'mean'; ``samples``: see above."""

    @staticmethod
    def forward(ctx, mask, chosen, strides, out_channels, mode, scale, samples, *ys):  # type: ignore[override]
        out = None
        for k in chosen:
            v = view(ys[k], strides[k])                            # (N, C_k, H_j, W_j)
            if out is None and v.shape[1] == out_channels:
                out = v * scale if scale != 1.0 else v.clone()
                continue
            if out is None:
                fmt = (torch.channels_last if ys[k].is_contiguous(memory_format=torch.channels_last)
                       and not ys[k].is_contiguous() else torch.contiguous_format)
                out = v.new_zeros((v.shape[0], out_channels, *v.shape[2:])).contiguous(
                    memory_format=fmt)
            out[:, : v.shape[1]].add_(v, alpha=scale)
        ctx.chosen, ctx.strides, ctx.mode, ctx.scale = chosen, strides, mode, scale
        ctx.shapes = [y.shape for y in ys]
        if ctx.needs_input_grad[0]:
            r = batch_rows(ys[0].shape[0], samples)
            direct, groups = _plan(ys, strides, out_channels)
            stacks = [STACKS.get([ys[k] for k in idx], s, r) for (s, _), idx in groups.items()]
            ctx.r, ctx.direct, ctx.groups = r, direct, [idx for idx in groups.values()]
            ctx.save_for_backward(*[ys[k] for k in direct], *stacks)
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        grads: list[torch.Tensor | None] = [None] * len(ctx.shapes)
        if ctx.scale != 1.0:
            g = g * ctx.scale
        for k in ctx.chosen:
            if not ctx.needs_input_grad[7 + k]:
                continue
            shape, (sh, sw) = ctx.shapes[k], ctx.strides[k]
            gk = g if shape[1] == g.shape[1] else g[:, : shape[1]]
            if sh == 1 and sw == 1:
                grads[k] = gk if gk is g else gk.contiguous()
            else:
                z = g.new_zeros(shape)
                z[:, :, ::sh, ::sw] = gk
                grads[k] = z
        gmask = None
        if ctx.needs_input_grad[0]:
            gmask = process_grad(_mask_grad(ctx, g), ctx.mode)
        return (gmask, None, None, None, None, None, None, *grads)


def _mask_grad(ctx, g: torch.Tensor) -> torch.Tensor:
    """(n,) fp32 straight-through gradient: dots for direct candidates, one matrix-vector
    product per stack of adapted ones; scaled by N / r when estimated from r items."""
    n, r = g.shape[0], ctx.r
    saved = ctx.saved_tensors
    ys, stacks = saved[: len(ctx.direct)], saved[len(ctx.direct):]
    out = torch.empty(len(ctx.shapes), dtype=torch.float32, device=g.device)
    if ys:
        out[ctx.direct] = candidate_grads(g, ys, ((1, 1),) * len(ys), r)
    for idx, stack in zip(ctx.groups, stacks):
        gc = g[:r, : stack.shape[2]].float().contiguous()        # (r, C, H, W), NCHW like the stack
        out[idx] = (stack.view(len(idx), -1) @ gc.view(-1)) * (n / r)
    return out
