"""Rewrite pass: make every block read a learnable K-sparse masked sum of earlier outputs.

Requires: ``gm`` traced with blocks as leaves and shape-annotated (see :mod:`mcgraph.tracing`).
Ensures:  block j's input is ``mcgraph_masks.<block>(*candidates)``, a :class:`MaskConnect` over
          the source (the stem output) and every earlier block whose output a parameter-free
          adapter (subsample + zero channel pad) can bring to block j's input shape. Candidates
          cross stages. With ``fan_in=1, init='prev'`` the model computes what it computed before.

    gm = annotate_shapes(trace(resnet), torch.randn(1, 3, 32, 32))
    gm = insert_masks(gm, fan_in=2, init="uniform", seed=0)
"""
from __future__ import annotations

import math
from typing import Iterable

from torch import fx

from ..errors import McGraphError
from ..masks import AGGREGATES, GRADS, INITS, MaskConnect
from ..tracing import node_shape
from .find_modules import find_modules

PASS = "insert_masks"
MASK_ROOT = "mcgraph_masks"


def adapter_stride(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int] | None:
    """Strides that bring a (N,C,H,W) output to (N,C',H',W'), or None when no option-A adapter can
    (more channels than the target, or no integer stride s with ceil(H/s) == H')."""
    if src[1] > dst[1]:
        return None
    out = []
    for a, b in ((src[2], dst[2]), (src[3], dst[3])):
        s = next((s for s in range(1, a + 1) if math.ceil(a / s) == b), None)
        if s is None:
            return None
        out.append(s)
    return out[0], out[1]


def mask_path(block_name: str) -> str:
    return f"{MASK_ROOT}.{block_name.replace('.', '_')}"


def check_mask_options(where: str, fan_in: int, init: str, mask_grad: str,
                       inits: tuple[str, ...] = INITS) -> None:
    """The options every mask-inserting pass validates the same way."""
    if init not in inits:
        raise McGraphError(where, f"init '{init}' does not apply here; use one of {', '.join(inits)}")
    if mask_grad not in GRADS:
        raise McGraphError(where, f"unknown mask gradient '{mask_grad}', expected one of {GRADS}")
    if fan_in < 1:
        raise McGraphError(where, f"fan-in K must be >= 1, got {fan_in}")


def insert_masks(gm: fx.GraphModule, fan_in: int, init: str = "uniform", seed: int = 0,
                 modules: Iterable[type | str] | None = None,
                 mask_grad: str = "normalized", aggregate: str = "mean") -> fx.GraphModule:
    check_mask_options(PASS, fan_in, init, mask_grad)
    if aggregate not in AGGREGATES:
        raise McGraphError(PASS, f"unknown aggregate '{aggregate}', expected one of {AGGREGATES}")
    chain = find_modules(gm, modules)
    producers: list[fx.Node] = [chain[0].args[0], *chain]  # type: ignore[list-item]
    names = [producers[0].name] + [str(b.target) for b in chain]
    plans = []
    for i, block in enumerate(chain):
        target = node_shape(block.args[0])  # type: ignore[arg-type]
        cands = [(k, s) for k in range(i + 1)
                 if (s := adapter_stride(node_shape(producers[k]), target)) is not None]  # type: ignore[arg-type]
        plans.append((block, target, cands))
    most = max(len(c) for _, _, c in plans)
    if fan_in > most:
        raise McGraphError(PASS, f"fan-in K={fan_in} is larger than the candidates of every module "
                                 f"(at most {most}, at {plans[-1][0].target})")
    for i, (block, target, cands) in enumerate(plans):
        name = str(block.target)
        idx = [k for k, _ in cands]
        if i not in idx:  # the original input is always adaptable (identity); guard anyway
            raise McGraphError(PASS, f"{name} cannot read its own original input {names[i]}")
        mc = MaskConnect(name, [names[k] for k in idx], [s for _, s in cands],
                         [node_shape(producers[k])[1] for k in idx], target[1],  # type: ignore[index]
                         fan_in=fan_in, init=init, prev=idx.index(i), seed=seed, index=i,
                         grad=mask_grad, aggregate=aggregate)
        path = mask_path(name)
        gm.add_submodule(path, mc)
        with gm.graph.inserting_before(block):
            mnode = gm.graph.call_module(path, tuple(producers[k] for k in idx))
        mnode.meta["mcgraph"] = {"role": "mask", "target": name}
        mnode.meta["tensor_meta"] = block.args[0].meta.get("tensor_meta")  # type: ignore[union-attr]
        block.args = (mnode,)
    gm.graph.lint()
    gm.recompile()
    return gm
