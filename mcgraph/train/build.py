"""The model a training run trains: rewritten from a name or loaded, wired by a fixed rule or
left to learn, and, once its masks freeze, the lowered view of it that fine-tuning runs on."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch
from torch import fx

from .. import graph_meta
from ..api import load, rewrite
from ..errors import McGraphError
from ..ir import carried_dag
from ..masks import mask_modules
from ..passes import pipelines, run_passes
from .config import TrainConfig
from .data import DataSpec

WHERE = "train"


# TrainConfig fields that shape a rewrite: a masked checkpoint already has them
REWRITE_FIELDS = ("fan_in", "init", "mask_grad", "aggregate", "model_args")


def is_checkpoint(model: str) -> bool:
    return model.endswith(".pt") or Path(model).is_file()


def checkpoint_options(cfg: TrainConfig, given: Iterable[str] = ()) -> TrainConfig:
    """``cfg`` with the rewrite options of its checkpoint model as the checkpoint has them (so
    config.json records what runs). An option set to another value (on the command line:
    ``given``; from Python: anything but the default) is refused: it cannot apply."""
    from ..checkpoint import read_checkpoint
    from ..config import default
    d = read_checkpoint(cfg.model)["description"]
    has = {"fan_in": d.get("fan_in"), "init": d.get("init"), "mask_grad": d.get("mask_grad"),
           "aggregate": d.get("aggregate"),
           "model_args": tuple((d.get("model_args") or {}).items())}
    given = set(given)
    for name in REWRITE_FIELDS:
        mine = getattr(cfg, name)
        set_here = name in given or mine != default(TrainConfig, name)
        same = dict(mine) == dict(has[name]) if name == "model_args" else mine == has[name]
        if set_here and has[name] is not None and not same and not (
                name == "init" and mine is None):
            raise McGraphError(WHERE, f"{name} {mine!r} cannot apply to {cfg.model}: the "
                                      f"checkpoint was rewritten with {name} {has[name]!r} "
                                      "(rewrite the model again to change it)", name)
    return dataclasses.replace(cfg, **{k: v for k, v in has.items() if v is not None})


def build_model(cfg: TrainConfig, spec: DataSpec) -> fx.GraphModule:
    """A masked model for ``spec``: rewritten from a model source (with ``cfg.model_args``), or
    loaded from a .pt (a file or module source in it only with ``cfg.trust_code``)."""
    want = [spec.in_channels, *spec.input_size]
    if is_checkpoint(cfg.model):
        gm = load(cfg.model, trust_code=cfg.trust_code)
        rw = graph_meta.rewrite_record(gm, WHERE)
        if list(rw["input_shape"]) != want:
            c, h, w = want
            raise McGraphError(WHERE, f"{cfg.model} was rewritten for inputs {rw['input_shape']} "
                                      f"but {spec.name} has {want}; rewrite it for them (mcgraph "
                                      f"rewrite ... --in-channels {c} --input-size {h}x{w}; in "
                                      f"Python in_channels={c}, input_size=({h}, {w}))")
        if rw["model_kwargs"]["num_classes"] != spec.num_classes:
            raise McGraphError(WHERE, f"{cfg.model} has {rw['model_kwargs']['num_classes']} "
                                      f"classes, {spec.name} has {spec.num_classes}")
    else:
        kw = dict(seed=cfg.seed, num_classes=spec.num_classes, in_channels=spec.in_channels,
                  input_size=spec.input_size, mask_grad=cfg.mask_grad, aggregate=cfg.aggregate,
                  model_args=dict(cfg.model_args))
        mode = cfg.connectivity
        if mode == "fixed-prev":
            gm = rewrite(cfg.model, 1, "prev", **kw)
        elif mode == "fixed-full":
            probe = rewrite(cfg.model, 1, "full", **kw)
            widest = max(m.num_candidates for m in mask_modules(probe))
            gm = rewrite(cfg.model, widest, "full", **kw)
        else:
            init = cfg.init or ("random" if mode == "fixed-random" else "uniform")
            gm = rewrite(cfg.model, cfg.fan_in, init, **kw)
    return apply_connectivity(gm, cfg.connectivity, cfg.seed, chain_blocks=cfg.chain_blocks,
                              wiring_from=cfg.wiring_from, trust_code=cfg.trust_code)


def apply_connectivity(gm: fx.GraphModule, mode: str, seed: int, *, chain_blocks: int | None = None,
                       wiring_from: str | None = None, trust_code: bool = False) -> fx.GraphModule:
    """Freeze the masks by a fixed rule (``fixed-*``); ``learned`` leaves them to training.

    ``fixed-chain``: a K=1 chain of ``chain_blocks`` blocks (the last block, which the head
    reads, plus a seeded random choice of the others, each reading the previous one); the
    same-size control for a learned K=1 network, which compiles to such a chain.
    ``fixed-wiring``: the chosen inputs of the checkpoint ``wiring_from``, weights fresh."""
    if mode == "fixed-chain":
        return _freeze_chain(gm, int(chain_blocks or 0), seed)
    if mode == "fixed-wiring":
        return _freeze_like(gm, str(wiring_from), trust_code)
    for m in mask_modules(gm):
        n, k = m.num_candidates, m.fan_in
        if mode == "fixed-prev":
            if k != 1 or m.rows != 1:
                raise McGraphError(WHERE, f"fixed-prev reads only the previous block (K=1, "
                                          f"module level); {m.target} has K={k}", "connectivity")
            m.freeze([n - 1])          # the last candidate is the block's original input
        elif mode == "fixed-full":
            if k < n:
                raise McGraphError(WHERE, f"fixed-full reads every candidate; {m.target} has "
                                          f"K={k} < {n} candidates", "connectivity")
            m.freeze([list(range(n))] * m.rows)
        elif mode == "fixed-random":   # K inputs per row drawn once, uniformly, never changed
            g = torch.Generator().manual_seed(seed * 7919 + m.index)
            m.freeze([torch.randperm(n, generator=g)[:k].tolist() for _ in range(m.rows)])
    return gm


def training_view(model: fx.GraphModule) -> fx.GraphModule:
    """Once every mask is frozen: the lowered graph without dead blocks, sharing its parameters
    with ``model`` (so training it trains ``model``, and checkpoints of ``model`` see it). Dead
    blocks are no longer computed and the masked sums become plain adds; the passes run through
    the driver, which checks the view computes what ``model`` computes. Branch-level models
    (whose pruning slices parameters into new tensors) train as they are, except Fixed-Full
    (every row reads all C branches): the original ResNeXt on one stream (CollapseStreams)."""
    from ..passes.collapse_streams import CollapseStreams, all_full
    dag = carried_dag(model, WHERE)
    if dag.level == "branch" and not all_full(model):
        return model
    graph = fx.Graph()
    graph.output(graph.graph_copy(model.graph, {}))
    view = fx.GraphModule(model, graph)        # new containers, the same leaf modules
    graph_meta.copy_to(model, view)            # with a DAG of its own
    view = run_passes(view, [CollapseStreams()] if dag.level == "branch"
                      else pipelines.lower()).graph_module
    return view.train(model.training)


def _freeze_chain(gm: fx.GraphModule, length: int, seed: int) -> fx.GraphModule:
    masks = {m.target: m for m in mask_modules(gm)}
    dag = carried_dag(gm, WHERE)
    blocks = dag.blocks()
    if dag.level != "module" or any(m.fan_in != 1 or m.rows != 1 for m in masks.values()):
        raise McGraphError(WHERE, "fixed-chain needs a module-level rewrite with K=1",
                           "connectivity")
    if not 1 <= length <= len(blocks):
        raise McGraphError(WHERE, f"chain_blocks must be in 1..{len(blocks)}, got {length}",
                           "chain_blocks")
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    picked = torch.randperm(len(blocks) - 1, generator=g)[: length - 1].tolist()
    chain = [blocks[i] for i in sorted(picked)] + [blocks[-1]]   # the head reads the last block
    for b in blocks:
        m = masks[b]                        # module level: each mask is named by its block
        earlier = [c for c in chain if blocks.index(c) < blocks.index(b)]
        src = earlier[-1] if b in chain and earlier else m.candidates[0]   # unread: any input
        m.freeze([m.candidates.index(src)])
    return gm


def _freeze_like(gm: fx.GraphModule, path: str, trust_code: bool = False) -> fx.GraphModule:
    try:
        donor = {m.target: m for m in mask_modules(load(path, trust_code=trust_code))}
    except McGraphError as e:
        raise McGraphError(WHERE, f"wiring_from: {e}", "wiring_from") from None
    for m in mask_modules(gm):
        d = donor.get(m.target)
        if d is None or d.num_candidates != m.num_candidates or d.fan_in != m.fan_in:
            raise McGraphError(WHERE, f"wiring_from: {path} has no mask for {m.target} with "
                                      f"{m.num_candidates} candidates and K={m.fan_in}",
                               "wiring_from")
        m.freeze([torch.nonzero(r).flatten().tolist() for r in d.eval_binary()])
    return gm
