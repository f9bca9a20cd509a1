"""Whether a masked model's wiring is decided, so that compiling it means something.

    state = wiring_state(model)
    state.problem()          # None, or why compile must refuse (one line)
    state.describe()         # "frozen; top-K margins: median 0.41, closest 0.02 (layer2.1)"

Compile freezes every mask to its top-K. That is the trained network only when the masks were
frozen during training (the weights then trained on that wiring), or when the masks were decided
before any training (``--init prev``: the original network; ``--init random``). Two cases are
wrong without a word: a checkpoint whose masks were still learning (the weights trained on
sampled wirings; BatchNorm's statistics average over them), and masks whose top-K is a tie
(an untrained uniform rewrite: every candidate equal, so the candidate order would choose).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

from .masks import mask_modules


@dataclass(frozen=True)
class WiringState:
    frozen: int                        # masks frozen (by training or by a fixed rule)
    masks: int
    learning: tuple[str, ...]          # unfrozen masks that trained (their draw counter moved)
    tied: tuple[str, ...]              # unfrozen masks with a row whose K-th and K+1-th tie
    gaps: tuple[tuple[str, float], ...]   # per row with more candidates than K: K-th - K+1-th m~
    steps: int                         # the most draws any mask made

    def problem(self) -> str | None:
        """Why compiling would mislead, in one line; None when the wiring is decided."""
        if self.learning:
            return (f"{len(self.learning)} of {self.masks} masks were still learning ({self.steps} "
                    f"steps, not frozen; e.g. {self.learning[0]}): the weights trained on sampled "
                    "wirings and BatchNorm's statistics average over them. Compile a checkpoint "
                    "from after the freeze (a run's best.pt), or give --data to freeze the masks "
                    "now and re-estimate BatchNorm")
        if self.tied:
            return (f"the top-K of {len(self.tied)} masks is a tie (e.g. {self.tied[0]}: its "
                    "largest m~ are equal, as in an untrained rewrite), so the candidates' order "
                    "would choose the wiring. Train the masks first, or rewrite with --init prev "
                    "(the original wiring) or --init random")
        return None

    def describe(self) -> str:
        """The wiring's decisiveness, for the compile report."""
        how = ("frozen" if self.frozen == self.masks else
               f"{self.frozen} of {self.masks} masks frozen" if self.frozen else "masks not frozen")
        if not self.gaps:
            return f"{how}; every mask reads all its candidates"
        vals = [g for _, g in self.gaps]
        name, low = min(self.gaps, key=lambda t: t[1])
        return (f"{how}; top-K margins over {len(vals)} rows: "
                f"median {statistics.median(vals):.2f}, closest {low:.2f} ({name})")


@torch.no_grad()
def wiring_state(model: nn.Module) -> WiringState:
    """How decided ``model``'s masks are; see the module docstring."""
    masks = mask_modules(model)
    learning, tied, gaps, steps = [], [], [], 0
    for m in masks:
        steps = max(steps, int(m.step))
        if not m.is_frozen and int(m.step) > 0:
            learning.append(m.target)
        if m.num_candidates <= m.fan_in:
            continue
        top = m.rank_key().sort(dim=1, descending=True).values
        row_gaps = (top[:, m.fan_in - 1] - top[:, m.fan_in]).tolist()
        if not m.is_frozen and min(row_gaps) <= 0:
            tied.append(m.target)
        gaps += [(m.target, float(g)) for g in row_gaps]
    return WiringState(sum(m.is_frozen for m in masks), len(masks), tuple(learning),
                       tuple(tied), tuple(gaps), steps)
