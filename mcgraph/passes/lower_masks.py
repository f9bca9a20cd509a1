"""Rewrite pass: replace each frozen mask by plain ops that add its K chosen inputs.

Requires: a masked GraphModule whose masks are all frozen (see :func:`freeze`).
Ensures:  no :class:`MaskConnect` remains; block j reads ``adapt(y_a) + adapt(y_b) + ...`` over its
          chosen inputs only (an identity adapter emits no op), times 1/K for the 'mean'
          aggregation, so the exported graph has no mask ops and no multiply by 0/1. Unchosen candidates are no longer read. Outputs are unchanged.

    gm = lower_masks(freeze(gm))
"""
from __future__ import annotations

import operator

from torch import fx

from ..errors import McGraphError
from ..masks import MaskConnect, adapt

PASS = "lower_masks"


def lower_masks(gm: fx.GraphModule) -> fx.GraphModule:
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        mc = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(mc, MaskConnect):
            continue
        if not bool(mc.frozen):
            raise McGraphError(PASS, f"the mask of {mc.target} is not frozen; run freeze first")
        chosen = mc.chosen.nonzero().flatten().tolist()
        with gm.graph.inserting_before(node):
            total = None
            for k in chosen:
                y = node.args[k]
                (sh, sw), c = mc.strides[k], mc.in_channels[k]
                if (sh, sw) != (1, 1) or c != mc.out_channels:
                    y = gm.graph.call_function(adapt, (y, sh, sw, mc.out_channels))
                total = y if total is None else gm.graph.call_function(operator.add, (total, y))
            if mc.scale != 1.0:
                total = gm.graph.call_function(operator.mul, (total, mc.scale))
        node.replace_all_uses_with(total)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
