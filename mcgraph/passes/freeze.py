"""Rewrite pass: fix every mask to its top-K binary value.

Requires: a masked GraphModule (see :func:`insert_masks`).
Ensures:  every :class:`MaskConnect` is frozen: it reads the same K inputs in train and eval, and
          its real-valued mask no longer receives gradients. The model's eval outputs do not change
          (eval already used the top-K of m~). Masks already frozen keep their choice.

    gm = freeze(gm)
"""
from __future__ import annotations

from torch import fx

from ..errors import McGraphError
from ..masks import freeze_masks, mask_modules

PASS = "freeze"


def freeze(gm: fx.GraphModule) -> fx.GraphModule:
    if not mask_modules(gm):
        raise McGraphError(PASS, f"{gm._get_name()} has no masks; run insert_masks first")
    return freeze_masks(gm)
