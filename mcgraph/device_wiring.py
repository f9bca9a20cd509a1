"""Device wiring: a masked learning step whose every decision stays on the device.

The eager masked sum (:mod:`mcgraph.masked_sum`) samples each mask's K inputs on the host and
launches kernels per chosen input and per candidate, so a GPU step is launch-bound and cannot be
captured as a CUDA graph (the wiring changes the kernels). With ``enable(model)`` a learning
:class:`~mcgraph.masks.MaskConnect` instead computes, on the device and with a fixed sequence
of kernels:

* **The draw.** Gumbel-top-K of log m~, with uniforms hashed from (seed, mask index, step): the
  same wiring on any device and any rank, with no generator state to save. One batch of
  kernels for all masks of the model (:meth:`Pool.begin_step`), then a top-K per mask.
* **The stage buffer.** The blocks whose inputs share one shape (a stage) read their candidates
  from one buffer ``(slots, N, C, H, W)`` per forward: each earlier output is adapted into it
  once (subsampled, zero-padded), by the first block of the stage that reads it, its *owner*.
  A block's input is an ``index_select`` of its sampled slots, summed and scaled.
* **The backward.** ``g`` is index-added into the stage's gradient buffer at the sampled slots;
  the block's mask gradient is one matrix-vector product of its slots with ``g``; and the owner
  of a candidate hands it its gradient from its slot (a view where no adapter applies). Every
  block reads its predecessor (the original wiring is always a candidate), so the backward of
  every later reader of a stage runs before its owner's: the slot is complete by then.

Values, input gradients and mask gradients equal the eager op's for the same draw
(tests/test_device_wiring.py). Differences: every candidate of a learning step gets a gradient
(zero when unread) where the eager op gives unread blocks none, so weight decay and momentum
also move the weights of blocks no sampled wiring read in that step; draws differ from the
host's generator. docs/design.md (device wiring) says why and what it costs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from .masked_sum import Stride, batch_rows, process_grad, view

if TYPE_CHECKING:
    from .masks import MaskConnect

M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class MaskPlan:
    """Where one mask's candidates live: its stage, the slot of each candidate, which
    candidates it owns (deposits and returns gradients for) and its order in the forward."""
    order: int
    stage: int
    slots: tuple[int, ...]
    owned: tuple[int, ...]


def plan(gm: fx.GraphModule) -> tuple[dict[str, MaskPlan], list[tuple[int, ...]]]:
    """Group the graph's MaskConnect calls by input shape (C, H, W) into stages, in forward
    order. Returns each mask's plan (by module path) and each stage's shape."""
    from .masks import MaskConnect

    mods = dict(gm.named_modules())
    calls = [n for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(mods.get(str(n.target)), MaskConnect)]
    stages: dict[tuple, list[str]] = {}
    plans: dict[str, MaskPlan] = {}
    for i, node in enumerate(calls):
        mc: MaskConnect = mods[str(node.target)]
        tm = node.meta.get("tensor_meta")
        # without shapes a mask is a stage of its own: correct, only less shared
        key = tuple(tm.shape[1:]) if tm is not None else ("own", i)
        members = stages.setdefault(key, [])
        owned = tuple(k for k, c in enumerate(mc.candidates) if c not in members)
        members.extend(mc.candidates[k] for k in owned)
        plans[str(node.target)] = MaskPlan(i, list(stages).index(key),
                                           tuple(members.index(c) for c in mc.candidates), owned)
    return plans, [tuple(k) if k[0] != "own" else () for k in stages]


class Pool:
    """The per-forward state of device wiring: the draws of every mask and each stage's value
    and gradient buffers. ``begin_step`` runs at the first mask of each forward."""

    def __init__(self, masks: list["MaskConnect"], stage_sizes: list[int]):
        self.masks, self.stage_sizes = masks, stage_sizes
        self.noise: list[torch.Tensor] = []
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}
        self._consts: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        # sampling temperature: a device tensor the host refills, so a captured graph reads
        # each step's value; None until annealing asks for one (then a division per mask)
        self.tau: torch.Tensor | None = None

    def set_temperature(self, t: float) -> None:
        if self.tau is None:
            if t == 1.0:
                return
            self.tau = torch.ones((), device=self.masks[0].mask.device)
        self.tau.fill_(t)

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per element of all masks: the hashed (seed, index, position) and its mask's number."""
        if device not in self._consts:
            base, owner = [], []
            for i, m in enumerate(self.masks):
                pos = torch.arange(m.mask.numel(), dtype=torch.int64)
                base.append((pos * 0x85EBCA77 + _mix(m.seed, m.index)) & M32)
                owner.append(torch.full_like(pos, i))
            self._consts[device] = (torch.cat(base).to(device), torch.cat(owner).to(device))
        return self._consts[device]

    @torch.no_grad()
    def begin_step(self) -> None:
        """Draw Gumbel noise for every mask at its current step, then advance the steps."""
        device = self.masks[0].mask.device
        base, owner = self._constants(device)
        steps = [m.step for m in self.masks]
        s = torch.stack(steps)[owner]
        g = gumbel(base + s * 0x27D4EB2F)
        self.noise = list(g.split([m.mask.numel() for m in self.masks]))
        torch._foreach_add_(steps, 1)           # in place: the buffers are checkpointed
        self.buffers = {}

    def stage(self, i: int, like: torch.Tensor, shape: tuple[int, ...], cl: bool):
        """Stage ``i``'s (values, gradients, channels_last) buffers for this forward, made by
        its first reader: ``(slots, N, C, H, W)`` as raw NCHW (or NHWC when ``cl``) memory of
        ``like``'s dtype."""
        if i not in self.buffers:
            n = like.shape[0]
            c, h, w = shape
            dims = (self.stage_sizes[i], n, h, w, c) if cl else (self.stage_sizes[i], n, c, h, w)
            values = torch.empty(dims, dtype=like.dtype, device=like.device)
            grads = torch.zeros(dims, dtype=like.dtype, device=like.device)
            self.buffers[i] = (values, grads, cl)
        return self.buffers[i]


def _mix(seed: int, index: int) -> int:
    return (int(seed) * 0x9E3779B1 + int(index) * 0xC2B2AE3D + 0x165667B1) & M32


def gumbel(x: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from int64 counters (one value per element): a 32-bit integer hash
    (lowbias32), exact on every device, to a uniform in (0, 1), to -log(-log(u))."""
    x = x & M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    x = x ^ (x >> 16)
    u = ((x >> 8).to(torch.float32) + 0.5) * (2.0 ** -24)
    return -torch.log(-torch.log(u))


def sample(m: "MaskConnect", noise: torch.Tensor, tau: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) int64 on the device: top-K of log m~ (divided by the temperature ``tau``) + Gumbel
    noise, as the host's sampler draws."""
    logits = torch.log(m.mask.detach().float().view(-1).clamp_min(1e-12))
    keys = (logits if tau is None else logits / tau) + noise
    return torch.topk(keys, m.fan_in).indices


def _is_cl(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last)


def _nchw(raw: torch.Tensor, cl: bool) -> torch.Tensor:
    """A raw (N, H, W, C) or (N, C, H, W) tensor as the logical (N, C, H, W) view."""
    return raw.permute(0, 3, 1, 2) if cl else raw


def _raw(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """A logical (N, C, H, W) tensor as contiguous raw memory of the buffers' layout."""
    return t.permute(0, 2, 3, 1).contiguous() if cl else t.contiguous()


def _mv32(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """a @ v accumulated and returned in fp32 (a scaled fp16 gradient overflows fp16)."""
    if a.dtype == torch.float32:
        return a @ v.float()
    if a.is_cuda:
        try:
            return torch.mm(a, v.to(a.dtype)[:, None], out_dtype=torch.float32)[:, 0]
        except (RuntimeError, TypeError):       # torch without mm(out_dtype=)
            pass
    return a.float() @ v.float()


class DeviceMaskedSum(torch.autograd.Function):
    """The device-wiring op; see the module docstring.
    ``apply(mask, chosen, plan, pool_stage, slots, strides, out_channels, mode, scale, samples,
    *ys)`` with ``chosen`` (K,) and ``slots`` (n,) int64 device tensors."""

    @staticmethod
    def forward(ctx, mask, chosen, p, stage, slots, strides, out_channels, mode, scale, samples,
                *ys):  # type: ignore[override]
        values, grads, cl = stage
        vn = _nchw_slots(values, cl)
        for k in p.owned:                        # adapt each owned candidate into its slot once
            y, c = view(ys[k], strides[k]), ys[k].shape[1]
            vn[p.slots[k], :, :c].copy_(y)
            if c < out_channels:
                vn[p.slots[k], :, c:].zero_()
        sel = slots[chosen]
        picked = values.index_select(0, sel)
        out = picked[0] if picked.shape[0] == 1 else picked.sum(0)
        if scale != 1.0:
            out = out * scale
        ctx.p, ctx.stage, ctx.sel, ctx.slots, ctx.strides = p, stage, sel, slots, strides
        ctx.mode, ctx.scale, ctx.shapes = mode, scale, [y.shape for y in ys]
        ctx.layouts = [_is_cl(y) for y in ys]
        ctx.r = batch_rows(ys[0].shape[0], samples)
        return _nchw(out, cl)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        values, grads, cl = ctx.stage
        p, n = ctx.p, len(ctx.shapes)
        g_raw = _raw(g.to(grads.dtype), cl)     # autocast may hand back a promoted gradient
        k = ctx.sel.shape[0]
        grads.index_add_(0, ctx.sel, g_raw.unsqueeze(0).expand(k, *g_raw.shape), alpha=ctx.scale)
        gmask = None
        if ctx.needs_input_grad[0]:
            gmask = process_grad(_mask_grad(ctx, values, g_raw), ctx.mode)
        gn = _nchw_slots(grads, cl)
        out: list[torch.Tensor | None] = [None] * n
        for i in p.owned:
            if ctx.needs_input_grad[10 + i]:
                out[i] = _unadapt(gn[p.slots[i]], ctx.shapes[i], ctx.strides[i], ctx.layouts[i])
        return (gmask, None, None, None, None, None, None, None, None, None, *out)


def _nchw_slots(buf: torch.Tensor, cl: bool) -> torch.Tensor:
    """(slots, N, C, H, W) logical view of a raw stage buffer."""
    return buf.permute(0, 1, 4, 2, 3) if cl else buf


def _mask_grad(ctx, values: torch.Tensor, g_raw: torch.Tensor) -> torch.Tensor:
    """(n,) fp32 <scale * g, adapt(y_k)> for every candidate, from the first r items of the
    batch scaled by N / r: one matrix-vector product over the block's slots."""
    slots, n_items, r = ctx.p.slots, g_raw.shape[0], ctx.r
    lo = slots[0]
    rows = (values[lo: lo + len(slots)] if slots == tuple(range(lo, lo + len(slots)))
            else values.index_select(0, ctx.slots))
    per = g_raw[0].numel()
    a = rows.reshape(len(slots), -1)[:, : r * per]           # each slot's first r items
    out = _mv32(a, g_raw.reshape(-1)[: r * per])
    factor = ctx.scale * (n_items / r)
    return out * factor if factor != 1.0 else out


def _unadapt(gs: torch.Tensor, shape: torch.Size, stride: Stride, cl: bool) -> torch.Tensor:
    """The gradient of a candidate of ``shape`` from its slot's gradient ``gs`` (N, C, H, W):
    the first channels, spread back over the subsampled positions."""
    gk = gs[:, : shape[1]]
    sh, sw = stride
    if sh == 1 and sw == 1 and tuple(gk.shape) == tuple(shape):
        return gk
    z = torch.empty(shape, dtype=gs.dtype, device=gs.device,
                    memory_format=torch.channels_last if cl else torch.contiguous_format).zero_()
    z[:, :, ::sh, ::sw] = gk
    return z


def enable(model: nn.Module) -> bool:
    """Make every learning module-level mask of ``model`` (a masked GraphModule) use device
    wiring in training forwards. Returns whether any does. Branch-level masks keep the eager
    op. Undo with :func:`disable` (before host code reads the masks' sampling state)."""
    if not isinstance(model, fx.GraphModule):
        return False
    plans, shapes = plan(model)
    mods = dict(model.named_modules())
    masks = [mods[path] for path in sorted(plans, key=lambda q: plans[q].order)]
    # an owner that did not learn would not deposit: all masks learn, or the eager op runs
    if not masks or any(m.is_frozen for m in masks):
        return False
    sizes = [0] * len(shapes)
    for q in plans.values():
        sizes[q.stage] = max(sizes[q.stage], max(q.slots) + 1)
    pool = Pool(masks, sizes)
    for i, m in enumerate(masks):
        q = plans[next(path for path in plans if mods[path] is m)]
        m._device = _Wiring(pool, i, q, torch.tensor(q.slots, dtype=torch.int64))
    return True


def disable(model: nn.Module) -> None:
    """Back to the eager op; the host mirrors of every mask's step and m~ are refreshed from
    the device (graph replays move them without the host knowing)."""
    from .masks import mask_modules

    for m in mask_modules(model):
        if getattr(m, "_device", None) is not None:
            m._device = None
        m.refresh_host_state()


@dataclass
class _Wiring:
    """What a mask under device wiring holds: the shared pool, its number among the pool's
    masks, its plan and its slots (moved to the activations' device on first use)."""
    pool: Pool
    number: int
    plan: MaskPlan
    slots: torch.Tensor

    def __deepcopy__(self, memo) -> None:      # a copied model (BN recalibration) runs eagerly
        return None


def forward(m: "MaskConnect", ys: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A learning MaskConnect's forward under device wiring."""
    w: _Wiring = m._device
    if w.number == 0:
        w.pool.begin_step()
    if w.slots.device != ys[0].device:
        w.slots = w.slots.to(ys[0].device)
    chosen = sample(m, w.pool.noise[w.number], w.pool.tau)
    prev = ys[m.prev]                      # the original input has the block input's shape
    like = ys[w.plan.owned[0]] if w.plan.owned else prev
    stage = w.pool.stage(w.plan.stage, like, tuple(prev.shape[1:]), _is_cl(prev))
    return DeviceMaskedSum.apply(m.mask, chosen, w.plan, stage, w.slots, m.strides,
                                 m.out_channels, m.grad, m.scale, m.grad_samples, *ys)
