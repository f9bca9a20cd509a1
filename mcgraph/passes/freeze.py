"""Rewrite pass: fix every mask to its top-K binary value.

Requires: a masked GraphModule (see :class:`InsertMasks`, :class:`SplitBranches`).
Ensures:  every mask is frozen: it reads the same K inputs in train and eval, and its real-valued
          mask no longer receives gradients. Eval outputs do not change (eval already used the
          top-K of m~; checked, 1e-4). Masks already frozen keep their choice.

    gm = run_passes(gm, [Freeze()]).graph_module      # or: freeze(gm)
"""
from __future__ import annotations

from torch import fx

from ..mask_ops import freeze_masks
from ..masks import mask_modules
from .base import EXACT, GraphPass, PassResult


class Freeze(GraphPass):
    name = "freeze"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        if not mask_modules(gm):
            raise self.error(f"{gm._get_name()} has no masks; run insert_masks first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        changed = any(not m.is_frozen for m in mask_modules(gm))
        freeze_masks(gm)
        return PassResult(gm, changed)

    def ensures(self, gm: fx.GraphModule) -> None:
        for m in mask_modules(gm):
            if not m.is_frozen or m.mask.requires_grad:
                raise self.error("is not frozen after the pass", m.target)


def freeze(gm: fx.GraphModule) -> fx.GraphModule:
    """Freeze ``gm``'s masks in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [Freeze()]).graph_module
