"""Rewrite pass: replace each frozen mask by plain ops that add its K chosen inputs.

Requires: a module-level masked GraphModule whose masks are all frozen (see :class:`Freeze`).
Ensures:  no :class:`MaskConnect` remains; block j reads ``adapt(y_a) + adapt(y_b) + ...`` over
          its chosen inputs only (an identity adapter emits no op), times 1/K for the 'mean'
          aggregation, so the exported graph has no mask ops and no multiply by 0/1; what each
          block reads in the graph is exactly the DAG's chosen edges, which the DAG now records
          (it outlives the masks). Outputs are unchanged (checked, 1e-4).

    gm = run_passes(gm, [Freeze(), LowerMasks()]).graph_module
"""
from __future__ import annotations

import operator

from torch import fx

from ..ir import carried_dag
from ..masks import MaskConnect, adapt
from .base import EXACT, GraphPass, PassResult
from .reads import check_reads

ROLE = "mcgraph_role"          # node.meta key: what a lowered op is for
CHANNELS = "mcgraph_channels"  # node.meta key: channels of the tensor a lowered op makes


class LowerMasks(GraphPass):
    name = "lower_masks"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        if carried_dag(gm, self.name).level != "module":
            raise self.error("branch masks are lowered by prune_branches")
        for m in gm.modules():
            if isinstance(m, MaskConnect) and not m.is_frozen:
                raise self.error(f"the mask of {m.target} is not frozen; run freeze first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        carried_dag(gm, self.name).record(gm)        # the frozen choice outlives the masks
        mods = dict(gm.named_modules())
        changed = False
        for node in list(gm.graph.nodes):
            mc = mods.get(node.target) if node.op == "call_module" else None
            if not isinstance(mc, MaskConnect):
                continue
            with gm.graph.inserting_before(node):
                total = None
                for k in mc.chosen.nonzero().flatten().tolist():
                    y = node.args[k]
                    (sh, sw), c = mc.strides[k], mc.in_channels[k]
                    if (sh, sw) != (1, 1) or c != mc.out_channels:
                        y = gm.graph.call_function(adapt, (y, sh, sw, mc.out_channels))
                    total = y if total is None else gm.graph.call_function(operator.add, (total, y))
                if mc.scale != 1.0:
                    total = gm.graph.call_function(operator.mul, (total, mc.scale))
                    total.meta[ROLE] = "mean_scale"       # conv_adapters may fold it
                    total.meta[CHANNELS] = mc.out_channels
            node.replace_all_uses_with(total)
            gm.graph.erase_node(node)
            changed = True
        gm.delete_all_unused_submodules()
        return PassResult(gm, changed)

    def ensures(self, gm: fx.GraphModule) -> None:
        if any(isinstance(m, MaskConnect) for m in gm.modules()):
            raise self.error("masks remain after the pass")
        check_reads(self, gm)


def lower_masks(gm: fx.GraphModule) -> fx.GraphModule:
    """Lower ``gm``'s frozen masks in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [LowerMasks()]).graph_module
