"""Rewrite pass: run each adapter once, as a 1x1 convolution, and the mean's 1/K as one too.

Requires: a module-level graph whose masks were lowered (:class:`LowerMasks`), dead modules
          removed or not. Node ``tensor_meta`` (from :func:`mcgraph.tracing.annotate_shapes`)
          gives each adapted tensor's channels.
Ensures:  every ``adapt(y, sh, sw, C)`` (subsample, zero-pad channels) is computed once per
          (source, stride, channels) and shared by all the blocks that read it, as a 1x1
          convolution of stride (sh, sw) whose weight is the identity padded with zero rows; the
          1/K of the 'mean' aggregation is a depthwise 1x1 convolution whose weight is 1/K.
          Weights are buffers (exported as initializers, not trained). Outputs are unchanged
          (checked, 1e-4: both convolutions multiply by 1, 0 or 1/K exactly).

Why convolutions: onnxruntime's CPU provider runs convolutions, adds and ReLUs in its blocked
NCHWc layout, but Slice, Pad and Mul in plain NCHW, so each of those pays two layout reorders
around a memory-bound copy. Measured on resnet56, random K=4 masks, batch 64, 2 threads:
slice/pad adapters and a Mul cost 1.37x the latency the MACs predict, convolutions 1.19x.
A 1x1 adapter adds C_in MACs per output element (under 4% of a compiled ResNet's MACs).

    gm = run_passes(gm, [Freeze(), LowerMasks(), EliminateDead(), ConvAdapters()]).graph_module
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx

from ..ir import carried_dag
from ..masks import MaskConnect, adapt
from .base import EXACT, GraphPass, PassResult
from .lower_masks import CHANNELS, ROLE
from .reads import check_reads


def _channels(p: GraphPass, node: fx.Node) -> int:
    tm = node.meta.get("tensor_meta")
    if tm is None or len(tm.shape) != 4:
        raise p.error("has no 4-D tensor_meta; annotate_shapes must run before the rewrite", node)
    return int(tm.shape[1])


class ConvAdapters(GraphPass):
    name = "conv_adapters"
    tolerance = EXACT

    def requires(self, gm: fx.GraphModule) -> None:
        if carried_dag(gm, self.name).level != "module":
            raise self.error("only module-level graphs have adapters")
        if any(isinstance(m, MaskConnect) for m in gm.modules()):
            raise self.error("the model still has masks; run freeze and lower_masks first")

    def _buffer(self, gm: fx.GraphModule, name: str, w: torch.Tensor, before: fx.Node) -> fx.Node:
        p = next(iter(gm.parameters()), None)
        if p is not None:
            w = w.to(device=p.device, dtype=p.dtype)
        gm.register_buffer(name, w)
        with gm.graph.inserting_before(before):
            return gm.graph.get_attr(name)

    def call(self, gm: fx.GraphModule) -> PassResult:
        shared: dict[tuple[fx.Node, int, int, int], fx.Node] = {}
        changed = False
        for node in list(gm.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target is adapt:
                y, sh, sw, c = node.args
                key = (y, int(sh), int(sw), int(c))
                if key not in shared:
                    cin = _channels(self, y)
                    w = torch.zeros(c, cin, 1, 1)
                    w[torch.arange(cin), torch.arange(cin)] = 1.0     # identity, zero rows below
                    attr = self._buffer(gm, f"adapter_{y.name}_s{sh}x{sw}_c{c}", w, node)
                    with gm.graph.inserting_before(node):
                        shared[key] = gm.graph.call_function(F.conv2d, (y, attr, None, (sh, sw)))
                    shared[key].meta[ROLE] = "adapter"
                node.replace_all_uses_with(shared[key])
                gm.graph.erase_node(node)
                changed = True
            elif node.target is operator.mul and node.meta.get(ROLE) == "mean_scale":
                x, scale = node.args
                c = node.meta.get(CHANNELS)
                if c is None:
                    raise self.error("scales a sum of unknown channels (lower_masks records them)",
                                     node)
                attr = self._buffer(gm, f"scale_{node.name}",
                                    torch.full((c, 1, 1, 1), float(scale)), node)
                with gm.graph.inserting_before(node):
                    conv = gm.graph.call_function(F.conv2d, (x, attr), {"groups": c})
                conv.meta[ROLE] = "mean_scale"
                node.replace_all_uses_with(conv)
                gm.graph.erase_node(node)
                changed = True
        return PassResult(gm, changed)

    def ensures(self, gm: fx.GraphModule) -> None:
        for n in gm.graph.nodes:
            if n.op == "call_function" and (n.target is adapt or n.target is operator.mul
                                            and n.meta.get(ROLE) == "mean_scale"):
                raise self.error("is left after the pass", n)
        check_reads(self, gm)


def conv_adapters(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite ``gm``'s adapters and mean scales in place (through the driver) and return it."""
    from .driver import run_passes
    return run_passes(gm, [ConvAdapters()]).graph_module
