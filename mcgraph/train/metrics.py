"""Evaluation and connectivity statistics reported per epoch."""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
from torch import nn

from ..accuracy import count_correct
from ..masks import mask_modules


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             num_classes: int, amp: bool = False, channels_last: bool = False,
             dtype: torch.dtype | None = None) -> dict[str, float]:
    """Top-1 (and top-5 when there are more than 10 classes) accuracy, in percent, and mean loss."""
    was = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
            logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        c1, c5, n = count_correct(logits, y)    # ties: the first index, as every path counts
        correct1, correct5, total = correct1 + c1, correct5 + c5, total + n
    model.train(was)
    return summarize([correct1, correct5, total, loss_sum], num_classes)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   amp: bool = False, channels_last: bool = False,
                   dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated under its eval wiring.

    While masks learn, every step samples a new wiring, so the running statistics average over
    wirings and match none: a branch-level ResNeXt evaluated with them scored 10% (chance) on
    Fashion-MNIST where the same weights scored 27% with statistics of the top-K wiring. The
    copy reads the top-K wiring (masks in eval) and averages ``batches`` (cumulative mean)."""
    m = copy.deepcopy(model).eval()
    for bn in m.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
    for x, _ in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
            m(x)
    return m.eval()


def summarize(sums: list[float], num_classes: int) -> dict[str, float]:
    """[correct top-1, correct top-5, total, loss sum] (summed over ranks) -> percentages."""
    correct1, correct5, total, loss_sum = sums
    out = {"acc": 100.0 * correct1 / max(total, 1), "loss": loss_sum / max(total, 1),
           "sums": [correct1, correct5, total, loss_sum]}
    if num_classes > 10:
        out["top5"] = 100.0 * correct5 / max(total, 1)
    return out


def chosen_sets(model: nn.Module) -> dict[str, list[list[int]]]:
    """Each mask row's eval-time inputs (top-K of m~, or the frozen set)."""
    out = {}
    for m in mask_modules(model):
        was = m.training
        m.eval()
        out[m.target] = [r.tolist() for r in m.selected_rows()]
        m.train(was)
    return out


def chosen_changed(before: dict[str, list[list[int]]], after: dict[str, list[list[int]]]) -> int:
    """How many chosen inputs differ between two snapshots (summed over mask rows)."""
    return sum(len(set(ra) - set(rb)) for k in after
               for ra, rb in zip(after[k], before.get(k, [[]] * len(after[k]))))


def mask_entropy(model: nn.Module) -> float:
    """Mean normalized entropy of p = m~ / sum(m~) over modules with more than one candidate:
    1.0 is uniform (undecided), 0.0 is one-hot (decided)."""
    vals = []
    for m in mask_modules(model):
        n = m.num_candidates
        if n < 2:
            continue
        for p in m.mask.detach().float().cpu().clamp_min(0).view(m.rows, n):
            s = float(p.sum())
            if s <= 0:
                vals.append(1.0)
                continue
            p = p / s
            h = -float((p[p > 0] * p[p > 0].log()).sum())
            vals.append(h / math.log(n))
    return sum(vals) / len(vals) if vals else 0.0


MARGIN = 0.05   # a row decided by less than this (in m~ units) is reported as close


def freeze_margins(model: nn.Module, margin: float = MARGIN) -> dict[str, float | int]:
    """How decisively top-K picks, over learning mask rows with more candidates than K: the
    gap between the K-th and the (K+1)-th largest m~ of each row. ``ties``: rows where that gap
    is exactly 0 in m~ itself (before any tie-break); ``close``: gap below ``margin``."""
    gaps = []
    for m in mask_modules(model):
        if m.is_frozen or m.num_candidates <= m.fan_in:
            continue
        v = m.mask.detach().float().cpu().view(m.rows, -1).sort(dim=1, descending=True).values
        gaps += (v[:, m.fan_in - 1] - v[:, m.fan_in]).tolist()
    return {"rows": len(gaps), "ties": sum(g == 0 for g in gaps),
            "close": sum(g < margin for g in gaps),
            "median_gap": float(torch.tensor(gaps).median()) if gaps else 0.0}
