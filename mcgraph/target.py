"""A size target for learned K=1 connectivity: the wiring frozen at the freeze is the most
probable chain whose compiled network costs what the user asked for.

    freeze_to_target(model, macs=0.5)          # half the original network's MACs (+- 5%)
    freeze_to_target(model, blocks=4)          # a chain of 4 blocks

With K=1 at module level the compiled network is a chain: the head reads the last block, and
each block on the chain reads one earlier output; the other blocks are removed. Its cost is
exact and additive: the stem and head, each kept block, and each adapter the compiler emits (a
1x1 convolution where a block reads an output of another shape: C_in MACs per output element).
:func:`chain_macs` is that cost; a test checks it against the MACs counted from the exported
ONNX graph. Among the chains within the target, :func:`best_chain` picks the one the masks
prefer most: the largest sum of log p over its edges, p = m~ / sum(m~) of each row (dynamic
programming over blocks and a cost grid, exact for a block-count target).

Branch level has no chain to choose (every stream reaches the head), and with K > 1 a block's
cost depends on which other blocks read it: both are refused in one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from . import graph_meta
from .errors import McGraphError
from .ir import dag_of
from .masks import MaskConnect, mask_modules

WHERE = "target"
TOLERANCE = 0.05          # the chosen chain's MACs within 5% of the target (goal: 10%)


@dataclass(frozen=True)
class Costs:
    fixed: int                            # stem and head
    blocks: dict[str, int]                # each block's own MACs (one image)
    candidates: dict[str, list[str]]      # each block's candidate inputs, in mask order
    adapters: dict[tuple[str, str], int]  # (source, block) -> the adapter's MACs, 0 if none

    @property
    def original(self) -> int:
        """The original network: every block, each reading its predecessor (no adapter)."""
        return self.fixed + sum(self.blocks.values())


def _masks(model: nn.Module) -> dict[str, MaskConnect]:
    masks = mask_modules(model)
    if not masks or any(not isinstance(m, MaskConnect) for m in masks):
        raise McGraphError(WHERE, "a size target needs a module-level rewrite (at branch level "
                                  "every stream reaches the head: there is no chain to choose)")
    if any(m.fan_in != 1 for m in masks if m.num_candidates > 1):
        raise McGraphError(WHERE, "a size target needs K=1 (with K>1 a block's cost depends on "
                                  "which other blocks read it)", "fan_in")
    return {m.target: m for m in masks}


@torch.no_grad()
def costs(model: fx.GraphModule) -> Costs:
    """The MACs of one image through each part of ``model`` (shapes only; any weights)."""
    masks = _masks(model)
    blocks = dag_of(model).blocks()
    per = {b: 0 for b in blocks}
    fixed = [0]

    def hook(name):
        def count(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                macs = out[0].numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            else:
                macs = out[0].numel() * mod.in_features
            owner = next((b for b in blocks if name == b or name.startswith(b + ".")), None)
            if owner is None:
                fixed[0] += macs
            else:
                per[owner] += macs
        return count

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    try:
        p = next(model.parameters())
        model.eval()(torch.zeros(1, *graph_meta.input_shape(model), device=p.device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    adapters = {}
    for b, m in masks.items():
        for c, (sh, sw), cin in zip(m.candidates, m.strides, m.in_channels):
            same = (sh, sw) == (1, 1) and cin == m.out_channels
            adapters[(c, b)] = 0 if same else _input_elems(model, b) * cin
    return Costs(fixed[0], per, {b: list(m.candidates) for b, m in masks.items()}, adapters)


def _input_elems(model: fx.GraphModule, block: str) -> int:
    """Elements of one image's input to ``block`` (C x H x W): a 1x1 adapter's outputs."""
    for n in model.graph.nodes:
        if n.op == "call_module" and str(n.target) == block:
            src = n.args[0]
            tm = src.meta.get("tensor_meta") if isinstance(src, fx.Node) else None
            if tm is not None:
                return int(math.prod(tm.shape[1:]))
    raise McGraphError(WHERE, f"{block}: no input shape on the graph (annotate_shapes)")


def chain_macs(c: Costs, chain: dict[str, str]) -> int:
    """MACs of the compiled chain ``{block: the input it reads}`` (blocks not in it removed)."""
    return c.fixed + sum(c.blocks[b] + c.adapters[(src, b)] for b, src in chain.items())


def best_chain(model: fx.GraphModule, *, macs: float | None = None, blocks: int | None = None,
               tolerance: float = TOLERANCE, grid: int = 4000) -> dict[str, str]:
    """The chain (``{block: input}``, ending at the last block) the masks prefer most among
    those within the target: ``macs`` a fraction of the original network's MACs (within
    ``tolerance`` of it), or exactly ``blocks`` blocks."""
    if (macs is None) == (blocks is None):
        raise McGraphError(WHERE, "give one target: a MACs fraction or a number of blocks")
    c, order, masks = costs(model), dag_of(model).blocks(), _masks(model)
    if blocks is not None:
        if not 1 <= blocks <= len(order):
            raise McGraphError(WHERE, f"target blocks must be in 1..{len(order)}, got {blocks}",
                               "target_blocks")
        size = {(src, b): 1 for (src, b) in c.adapters}
        lo = hi = float(blocks)
        unit = 1.0
    else:
        if not 0 < macs <= 1:
            raise McGraphError(WHERE, f"target MACs is a fraction of the original network's, "
                                      f"in (0, 1], got {macs}", "target_macs")
        size = {(src, b): c.blocks[b] + a for (src, b), a in c.adapters.items()}
        want = macs * c.original - c.fixed
        lo, hi = want - tolerance * macs * c.original, want + tolerance * macs * c.original
        unit = max(1.0, c.original / grid)
    logp = {b: _log_probs(masks[b]) for b in order}
    chain = _dp(order, c.candidates, logp, size, unit, lo, hi)
    if chain is None:
        smallest = chain_macs(c, {order[-1]: c.candidates[order[-1]][0]})
        what = f"{blocks} blocks" if blocks is not None else f"{macs:.0%} of its MACs"
        raise McGraphError(WHERE, f"no chain of this network is within the target ({what}); the "
                                  f"smallest costs {smallest / c.original:.1%} of the original "
                                  "network's MACs", "target_blocks" if blocks else "target_macs")
    return chain


def _log_probs(m: MaskConnect) -> dict[str, float]:
    v = m.mask.detach().float().cpu().view(-1).clamp_min(1e-12)
    v = v / v.sum()
    return {c: float(math.log(p)) for c, p in zip(m.candidates, v.tolist())}


State = dict[int, tuple[float, float, "str | None", int]]   # grid key -> score, size, src, key


def _dp(order: list[str], cands: dict[str, list[str]], logp: dict[str, dict[str, float]],
        size: dict[tuple[str, str], float], unit: float, lo: float, hi: float):
    """Best-scoring path from a source to the last block whose exact size is in [lo, hi].
    Paths ending at a block are kept per size rounded to ``unit`` (the best of each)."""
    best: dict[str, State] = {}
    for b in order:
        here: State = {}
        for src in cands[b]:
            starts: State = best.get(src, {0: (0.0, 0.0, None, -1)})
            for k, (score, total, _, _) in starts.items():
                t = total + size[(src, b)]
                if t > hi:
                    continue
                kk, sc = int(round(t / unit)), score + logp[b][src]
                if kk not in here or sc > here[kk][0]:
                    here[kk] = (sc, t, src, k)
        best[b] = here
    ends = [(sc, k) for k, (sc, t, _, _) in best[order[-1]].items() if lo <= t <= hi]
    if not ends:
        return None
    _, k = max(ends)
    chain, b = {}, order[-1]
    while b in best:
        _, _, src, prev = best[b][k]
        chain[b], b, k = src, src, prev
    return chain


def freeze_to_target(model: fx.GraphModule, *, macs: float | None = None,
                     blocks: int | None = None, tolerance: float = TOLERANCE) -> dict[str, str]:
    """Freeze every mask so the compiled network is :func:`best_chain`: blocks on the chain
    read their chain input; the others keep their top-1 (they are removed at compile)."""
    chain = best_chain(model, macs=macs, blocks=blocks, tolerance=tolerance)
    for m in mask_modules(model):
        if m.target in chain:
            m.freeze([m.candidates.index(chain[m.target])])
        elif not m.is_frozen:
            m.freeze()
    return chain


def chain_of(model: nn.Module) -> dict[str, str]:
    """The live chain of a frozen K=1 model: ``{block: input}`` for the blocks kept."""
    dag = dag_of(model)
    dead = set(dag.dead_modules())
    return {b: dag.chosen_inputs(b)[0] for b in dag.blocks() if b not in dead}


def fraction(model: nn.Module) -> float:
    """The compiled chain's MACs over the original network's (frozen K=1 model)."""
    c = costs(model)
    return chain_macs(c, chain_of(model)) / c.original
