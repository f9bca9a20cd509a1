"""Why this input: does each mask's choice agree with what the network itself prefers?

    report = why(model, data)                      # a masked model and a data set with .val
    report.rows[0].loss                            # validation loss per candidate of that row
    report.summary()                               # rows, picked the loss-best, Spearman, margin

For every mask row on the live path (module level: a live block's mask; branch level: every
stream's row), and for every input the row reads (K > 1: one chosen input at a time), the
instrument swaps that input for each candidate the row does not read, the rest of the wiring
at its eval choice (the frozen set, or the top-K of m~), and measures the loss on held-out
validation batches. It reports per row the loss of each alternative, their rank correlation with
m~ (Spearman: +1 when m~ orders the candidates as the loss does), whether the chosen input is the
loss-best one, and the margin (the second-best loss minus the chosen input's: positive when the
choice wins by that much, negative when it trails the best by that much).

BatchNorm: a swapped wiring is one the network never trained on, so its running statistics do
not fit. ``bn="batch"`` (default) normalizes every evaluated batch with its own statistics (the
same rule for every wiring, cheap); ``bn="recalibrate"`` re-estimates the running statistics
for each wiring on ``bn_batches`` training batches first, as the trainer's evaluation does.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

import torch
from torch import nn

from .errors import McGraphError
from .ir import HEAD, dag_of
from .masks import KHotMask, mask_modules

BN = Literal["batch", "recalibrate"]


@dataclass
class RowWhy:
    mask: str                       # the mask module's target (a block)
    row: int                        # 0 at module level; the stream at branch level
    slot: int                       # which of the row's K chosen inputs was swapped
    chosen: str
    candidates: list[str]           # the chosen input first, then every unread candidate
    m: list[float]                  # m~ of each (same order)
    loss: list[float]               # validation loss with that candidate in the slot
    spearman: float | None          # rank correlation of m~ with -loss (None: fewer than 3)
    picked_best: bool
    margin: float                   # second-best loss - chosen loss (see the module docstring)


@dataclass
class WhyReport:
    rows: list[RowWhy] = field(default_factory=list)
    base_loss: float = 0.0          # the eval wiring's validation loss
    images: int = 0
    bn: str = "batch"
    order: list[str] = field(default_factory=list)   # the model's modules, inputs first

    def summary(self) -> dict[str, Any]:
        rho = [r.spearman for r in self.rows if r.spearman is not None]
        margins = sorted(r.margin for r in self.rows)
        return {"rows": len(self.rows), "picked_best": sum(r.picked_best for r in self.rows),
                "mean_spearman": sum(rho) / len(rho) if rho else None,
                "median_margin": margins[len(margins) // 2] if margins else None,
                "base_loss": self.base_loss, "images": self.images, "bn": self.bn}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "rows": [asdict(r) for r in self.rows]}


def spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation with average ranks for ties; None with fewer than 3 values or no spread."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


def _ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def live_rows(model: nn.Module) -> list[tuple[KHotMask, int]]:
    """(mask, row) pairs whose choice reaches the head under the eval wiring."""
    dag = dag_of(model)
    live = dag.live_modules()
    mods = dict(model.named_modules())
    out = []
    for path in dag.selectors():
        m = mods.get(path)
        if not isinstance(m, KHotMask):
            continue
        for r in range(m.rows):
            dests = {b for a, b, d in dag.graph.edges(data=True)
                     if d.get("selector") == path and any(e[0] == r for e in d["entries"])}
            if dag.level == "branch" or any(b in live or b == HEAD for b in dests):
                out.append((m, r))
    return out


def candidate_names(model: nn.Module, m: KHotMask, row: int) -> list[str]:
    """The source module of each candidate column of ``m``'s row ``row``."""
    dag = dag_of(model)
    names = {}
    for a, _, d in dag.graph.edges(data=True):
        if d.get("selector") == _path(model, m):
            for r, c in d["entries"]:
                if r == row:
                    names[c] = a
    return [names.get(c, str(c)) for c in range(m.num_candidates)]


def _path(model: nn.Module, m: nn.Module) -> str:
    return next(p for p, x in model.named_modules() if x is m)


@torch.no_grad()
def _loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], bn: BN,
          calib: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    from .train.metrics import recalibrate_bn
    if bn == "recalibrate":
        model = recalibrate_bn(model, calib)
    model.eval()
    if bn == "batch":
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.train()              # each batch normalized by its own statistics
    total, n = 0.0, 0
    for x, y in batches:
        total += float(nn.functional.cross_entropy(model(x), y, reduction="sum"))
        n += y.numel()
    return total / max(n, 1)


def why(model: nn.Module, data: Any, *, batches: int = 4, batch_size: int = 250,
        bn: BN = "batch", bn_batches: int = 20, device: str | torch.device = "cpu") -> WhyReport:
    """The instrument (see the module docstring). ``data``: a :class:`mcgraph.train.data.Data`
    with a validation split (never the test split); ``batches`` of ``batch_size`` of it."""
    from .train.data import make_loader
    if not mask_modules(model):
        raise McGraphError("why", "the model has no masks: nothing chose its inputs")
    if data.val is None:
        raise McGraphError("why", f"{data.spec.name} has no validation split to measure on")
    if bn not in ("batch", "recalibrate"):
        raise McGraphError("why", f"bn must be 'batch' or 'recalibrate', got {bn!r}", "bn")
    net = copy.deepcopy(model).to(device)
    val = list(itertools.islice(iter(make_loader(data, "val", batch_size, shuffle=False,
                                                 augment=False, device=device)), batches))
    calib = (list(itertools.islice(iter(make_loader(data, "train", 128, shuffle=True,
                                                     augment=False, seed=0, device=device)),
                                   bn_batches)) if bn == "recalibrate" else [])
    choice = {id(m): [list(map(int, torch.nonzero(r).flatten())) for r in m.eval_binary()]
              for m in mask_modules(net)}
    for m in mask_modules(net):
        m.freeze(choice[id(m)])
    dag = dag_of(net)
    order = [n for n, d in dag.graph.nodes(data=True) if d["kind"] == "source"] + dag.blocks()
    report = WhyReport(base_loss=_loss(net, val, bn, calib), images=sum(len(y) for _, y in val),
                       bn=bn, order=order)
    for m, r in live_rows(net):
        report.rows += _row(net, m, r, choice[id(m)], val, bn, calib, report.base_loss)
    return report


def _row(net: nn.Module, m: KHotMask, r: int, rows: list[list[int]], val, bn: BN, calib,
         base: float) -> list[RowWhy]:
    names = candidate_names(net, m, r)
    values = m.mask.detach().float().cpu().view(m.rows, -1)[r].tolist()
    out = []
    for slot, chosen in enumerate(rows[r]):
        alts = [c for c in range(m.num_candidates) if c not in rows[r]]
        if not alts:
            continue
        cols, losses = [chosen], [base]
        for c in alts:
            trial = [list(x) for x in rows]
            trial[r][slot] = c
            m.freeze(trial)
            cols.append(c)
            losses.append(_loss(net, val, bn, calib))
        m.freeze(rows)
        ms = [values[c] for c in cols]
        best_other = min(losses[1:])
        out.append(RowWhy(m.target, r, slot, names[chosen], [names[c] for c in cols], ms, losses,
                          spearman(ms, [-v for v in losses]), base <= best_other,
                          best_other - base))
    return out


def rows_table(report: WhyReport) -> list[list[Any]]:
    """One line per row: mask, row/slot, chosen, its loss, the best alternative, margin, rho."""
    out = []
    for w in report.rows:
        i = min(range(1, len(w.loss)), key=lambda k: w.loss[k])
        out.append([w.mask if w.row == 0 and w.slot == 0 else f"{w.mask}[{w.row}.{w.slot}]",
                    w.chosen, f"{w.loss[0]:.4f}", f"{w.candidates[i]} {w.loss[i]:.4f}",
                    f"{w.margin:+.4f}", "-" if w.spearman is None else f"{w.spearman:+.2f}",
                    "yes" if w.picked_best else "no"])
    return out


def heat_rows(report: WhyReport) -> Iterable[tuple[str, dict[str, float]]]:
    """For the heat map: per row, the loss change of each candidate against the chosen one."""
    for w in report.rows:
        label = w.mask if w.row == 0 and w.slot == 0 else f"{w.mask}[{w.row}.{w.slot}]"
        yield label, {c: v - w.loss[0] for c, v in zip(w.candidates, w.loss)}
