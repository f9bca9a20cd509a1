"""torch.fx tracing that keeps residual blocks whole, plus shape annotation.

A *module* in MaskConnect's sense is a residual block. By default the tracer keeps whole every
module that :func:`mcgraph.residual.find_candidates` finds to be of residual form (decided by
tracing each module itself, not by its type); the analysis pass ``discover_blocks`` then keeps
those called once on the network's main path. Types or qualified names a user passes
(``modules=``) override the search. Blocks stay leaves (one ``call_module`` node each) so later
passes can rewire their inputs. The tracer knows no model.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from . import graph_meta
from .errors import McGraphError, first_line


def describe_blocks(modules: Iterable[type | str] | None) -> str:
    """What a block search looked for, for error messages."""
    if modules:
        return "module types/names " + ", ".join(m if isinstance(m, str) else m.__name__
                                                 for m in modules)
    return "modules of residual form act(F(x) + S(x))"


def is_block(module: nn.Module, qualname: str, modules: Iterable[type | str] | None) -> bool:
    """True when ``module`` is one of ``modules`` (types, type names or qualified names)."""
    for m in modules or ():
        if isinstance(m, str) and (qualname == m or type(module).__name__ == m):
            return True
        if isinstance(m, type) and isinstance(module, m):
            return True
    return False


class BlockTracer(fx.Tracer):
    """fx tracer whose leaves are the standard leaves plus residual blocks."""

    def __init__(self, modules: Iterable[type | str] | None = None):
        super().__init__()
        self.modules = None if modules is None else tuple(modules)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_block(m, qualname, self.modules) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, modules: Iterable[type | str] | None = None) -> fx.GraphModule:
    """Symbolically trace ``model`` keeping residual blocks as leaves: ``modules`` when given,
    else every candidate of residual form, whose verdicts (block or why not) go to
    :func:`mcgraph.graph_meta.discovery` for the ``discover_blocks`` pass.

    Raises McGraphError naming the model when fx cannot trace it (data-dependent control flow).
    """
    discovery = None
    if modules is None:
        from .residual import find_candidates
        verdicts, found = find_candidates(model)
        discovery = {"verdicts": verdicts, "candidates": found}
        modules = found
    tracer = BlockTracer(modules)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError ...
        raise McGraphError("trace", f"{type(model).__name__} cannot be traced by torch.fx "
                                    f"({type(e).__name__}: {first_line(e)})") from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    if discovery is not None:
        graph_meta.set_discovery(gm, discovery)
    return gm


def annotate_shapes(gm: fx.GraphModule, example_input: torch.Tensor) -> fx.GraphModule:
    """Analysis pass: run ``example_input`` through ``gm`` and set ``node.meta['tensor_meta']``."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as e:
        raise McGraphError("annotate_shapes",
                           f"example input of shape {tuple(example_input.shape)} does not run "
                           f"through the model: {first_line(e)}") from None
    finally:
        gm.train(was_training)
    return gm


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None
