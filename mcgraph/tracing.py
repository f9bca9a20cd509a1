"""torch.fx tracing that keeps residual blocks whole, plus shape annotation.

A *module* in MaskConnect's sense is a residual block: a type registered with
:func:`register_block` (the model zoo registers torchvision's BasicBlock/Bottleneck and its own
CIFAR blocks), or any type or qualified name the user passes. Those stay leaves (one
``call_module`` node each) so later passes can rewire their inputs. The tracer knows no model.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import McGraphError, first_line

_BLOCK_TYPES: list[type] = []


def register_block(cls: type) -> type:
    """Decorator (or call): instances of ``cls`` count as MaskConnect modules by default."""
    if cls not in _BLOCK_TYPES:
        _BLOCK_TYPES.append(cls)
    return cls


def default_block_types() -> tuple[type, ...]:
    return tuple(_BLOCK_TYPES)


def describe_blocks(modules: Iterable[type | str] | None) -> str:
    """What a block search looked for, for error messages."""
    if modules:
        return "module types/names " + ", ".join(m if isinstance(m, str) else m.__name__ for m in modules)
    return "/".join(t.__name__ for t in _BLOCK_TYPES) or "registered block types (none registered)"


def is_block(module: nn.Module, qualname: str, modules: Iterable[type | str] | None) -> bool:
    """True when ``module`` counts as a MaskConnect module (a leaf for tracing)."""
    if modules is None:
        return isinstance(module, default_block_types())
    for m in modules:
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
    """Symbolically trace ``model`` keeping residual blocks as leaves.

    Raises McGraphError naming the model when fx cannot trace it (data-dependent control flow).
    """
    tracer = BlockTracer(modules)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError ...
        raise McGraphError("trace", f"{type(model).__name__} cannot be traced by torch.fx "
                                    f"({type(e).__name__}: {first_line(e)})") from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    return gm


def annotate_shapes(gm: fx.GraphModule, example_input: torch.Tensor) -> fx.GraphModule:
    """Analysis pass: run ``example_input`` through ``gm`` and set ``node.meta['tensor_meta']``."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except Exception as e:
        raise McGraphError("annotate_shapes", f"example input of shape {tuple(example_input.shape)} "
                                              f"does not run through the model: {first_line(e)}") from None
    finally:
        gm.train(was_training)
    return gm


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None
