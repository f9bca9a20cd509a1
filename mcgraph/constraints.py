"""What keeps the real-valued masks m~ in [0, 1] after each optimizer step: the paper's clip
('box', with an overflow tie-break) or the projection onto the capped simplex ('simplex').

    opt.step()
    constrain_masks_(model)            # default 'simplex'; 'box' is the paper's clip
"""
from __future__ import annotations

import torch
from torch import nn

from .masks import CONSTRAINTS, mask_modules


@torch.no_grad()
def clip_masks_(model: nn.Module) -> None:
    """The 'box' constraint: clip every learning m~ to [0, 1] and add what the clip removed to
    ``overflow`` (reset while an entry is strictly inside, so it measures the current spell at
    the boundary). Without it, rows whose entries all saturate at 1 would be ranked by index."""
    for m in mask_modules(model):
        if m.is_frozen:
            continue
        before = m.mask.detach().clone()
        m.mask.clamp_(0.0, 1.0)
        inside = (m.mask > 0) & (m.mask < 1)
        m.overflow.add_(before - m.mask).masked_fill_(inside, 0.0)


@torch.no_grad()
def project_rows_(v: torch.Tensor, k: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` (R, n) onto {0 <= x <= 1, sum x = k_r}, in
    place: x = clamp(v - tau_r, 0, 1) with tau_r found by bisection (sum is monotone in tau).
    Rows with k_r >= n become all ones. -inf entries are padding and stay at 0."""
    finite = torch.isfinite(v)
    lo = torch.where(finite, v, v.new_full((), float("inf"))).amin(1, keepdim=True) - 1.0
    hi = torch.where(finite, v, v.new_full((), float("-inf"))).amax(1, keepdim=True)
    k = k.to(v.dtype).view(-1, 1)
    for _ in range(iters):                  # 40 halvings of a bracket a few units wide: ~1e-12
        mid = (lo + hi) / 2
        big = (v - mid).clamp(0.0, 1.0).sum(1, keepdim=True) > k
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    return v.sub_(hi).clamp_(0.0, 1.0)


@torch.no_grad()
def constrain_masks_(model: nn.Module, constraint: str = "simplex") -> None:
    """Call after each optimizer step. ``box``: the paper's clip to [0, 1] (:func:`clip_masks_`).
    ``simplex`` (default): project each row onto {0 <= m~ <= 1, sum m~ = K}. Sampling reads
    m~ / sum(m~), so the row sum carries no information and the centered gradients never move
    it; the clip is what lets rows drift to several entries at exactly 1 (undecided, top-K by
    tie-break, sampling uniform among them). On the capped simplex at most K entries reach 1,
    and then the rest are 0: a decided row, which the gradient can still undo."""
    if constraint == "box":
        return clip_masks_(model)
    if constraint != "simplex":
        raise ValueError(f"unknown mask constraint '{constraint}', expected one of {CONSTRAINTS}")
    live = [m for m in mask_modules(model) if not m.is_frozen]
    if not live:
        return
    width = max(m.num_candidates for m in live)
    rows = [torch.nn.functional.pad(m.mask.detach().view(m.rows, -1).float(),
                                    (0, width - m.num_candidates), value=float("-inf"))
            for m in live]
    ks = torch.cat([torch.full((m.rows,), m.fan_in, device=rows[0].device) for m in live])
    out = project_rows_(torch.cat(rows), ks)
    for m, r in zip(live, out.split([m.rows for m in live])):
        m.mask.copy_(r[:, : m.num_candidates].view_as(m.mask))
