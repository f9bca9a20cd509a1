"""The Python API: rewrite, freeze, compile, export, save, load.

    masked = mcgraph.rewrite("resnet20", fan_in=2, in_channels=1, input_size=(28, 28))
    slim, report = mcgraph.compile(masked)
    mcgraph.export_onnx(slim, "model.onnx", report.input_shape)
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import fx, nn

from .checkpoint import read_checkpoint, write_checkpoint
from .errors import McGraphError
from .ir import ModuleDAG
from .masks import mask_modules
from .models import create_model, model_info
from .passes import (eliminate_dead, freeze, insert_masks, lower_masks, prune_branches,
                     split_branches)
from .passes.find_modules import block_nodes
from .passes.split_branches import is_grouped_bottleneck
from .tracing import annotate_shapes, trace


def count_params(model: nn.Module, masks: bool = False) -> int:
    """Weights of ``model``; mask parameters only when ``masks`` is True."""
    mask_ids = {id(m.mask) for m in mask_modules(model)}
    return sum(p.numel() for p in model.parameters() if (id(p) in mask_ids) == masks)


def description(model: fx.GraphModule) -> dict[str, Any]:
    """The plain description a checkpoint stores (see :func:`save`)."""
    meta = model.meta.get("mcgraph")
    if not isinstance(meta, dict) or "rewrite" not in meta:
        raise McGraphError("save", "the model was not produced by mcgraph.rewrite")
    dag = ModuleDAG.from_graph_module(model)
    masks = {b: {"candidates": dag.candidates(b), "values": [dag.graph.edges[c, b]["mask"]
                                                             for c in dag.candidates(b)],
                 "chosen": dag.chosen_inputs(b), "frozen": dag.graph.nodes[b]["frozen"]}
             for b in dag.blocks()}
    return {**meta["rewrite"], "masks": masks}


def rewrite(model: nn.Module | str, fan_in: int, init: str = "uniform",
            example_input: torch.Tensor | None = None,
            modules: Iterable[type | str] | None = None, seed: int = 0, *,
            num_classes: int = 10, in_channels: int = 3,
            input_size: tuple[int, int] | None = None, weights: str | None = None,
            mask_grad: str = "normalized", aggregate: str = "mean",
            level: str = "auto") -> fx.GraphModule:
    """Trace ``model`` (or build the registered model of that name) and insert masks.

    ``level``: ``module`` (masks between residual blocks), ``branch`` (ResNeXt: masks between
    the branches of consecutive blocks) or ``auto`` (branch when every block is a grouped
    bottleneck). The result is a masked ``fx.GraphModule``; the original model is not modified."""
    name = model if isinstance(model, str) else None
    if name is not None:
        info = model_info(name)
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, weights=weights)
        input_size = tuple(input_size or info.input_size)  # type: ignore[assignment]
    else:
        model = copy.deepcopy(model)
    assert isinstance(model, nn.Module)
    if example_input is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        c = conv.in_channels if conv is not None else in_channels
        example_input = torch.randn(1, c, *(input_size or (32, 32)))
    mods = None if modules is None else list(modules)
    gm = trace(model, mods)
    gm = annotate_shapes(gm, example_input)
    level = _level(gm, mods, level)
    if level == "branch":
        gm = split_branches(gm, fan_in=fan_in, init=init, seed=seed, modules=mods,
                            mask_grad=mask_grad)
    else:
        gm = insert_masks(gm, fan_in=fan_in, init=init, seed=seed, modules=mods,
                          mask_grad=mask_grad, aggregate=aggregate)
    gm.meta["mcgraph"] = {"rewrite": {
        "model": name, "model_kwargs": {"num_classes": num_classes, "in_channels": in_channels},
        "fan_in": int(fan_in), "init": init, "seed": int(seed), "mask_grad": mask_grad,
        "aggregate": aggregate, "level": level,
        "input_shape": list(example_input.shape[1:]),
        "modules": None if mods is None else [m if isinstance(m, str) else m.__name__ for m in mods],
    }}
    return gm


def _level(gm: fx.GraphModule, modules: list | None, level: str) -> str:
    if level not in ("auto", "module", "branch"):
        raise McGraphError("rewrite", f"unknown level '{level}', expected auto, module or branch")
    if level != "auto":
        return level
    mods = dict(gm.named_modules())
    blocks = [mods[n.target] for n in block_nodes(gm, modules)]
    return "branch" if blocks and all(is_grouped_bottleneck(b) for b in blocks) else "module"


def input_shape(model: fx.GraphModule) -> tuple[int, ...]:
    """One sample's (C, H, W) the model was rewritten for."""
    return tuple(model.meta["mcgraph"]["rewrite"]["input_shape"])


@dataclass
class CompileReport:
    params_before: int
    params_after: int
    mask_params: int
    modules_before: int
    modules_after: int
    removed: list[str]
    input_shape: list[int]
    max_abs_diff: float           # slim vs frozen masked model (PyTorch); the CLI adds ONNX's
    output_scale: float
    opset: int | None = None
    onnx_path: str | None = None
    onnx_max_abs_diff: float | None = None
    onnx_ops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compile(model: fx.GraphModule, check_batch: int = 4) -> tuple[fx.GraphModule, CompileReport]:
    """Freeze the masks, lower them to plain adds, remove dead modules, and check the result.

    Returns the slim GraphModule (eval mode, no masks) and a :class:`CompileReport`. The model
    passed in is not modified."""
    if not mask_modules(model):
        raise McGraphError("compile", f"{model._get_name()} has no masks; rewrite it first")
    frozen = freeze(copy.deepcopy(model)).eval()
    dag = ModuleDAG.from_graph_module(frozen)
    if dag.level == "branch":
        slim = prune_branches(copy.deepcopy(frozen), dag).eval()
    else:
        slim = eliminate_dead(lower_masks(copy.deepcopy(frozen)), dag).eval()
    shape = input_shape(model)
    x = torch.randn(check_batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = frozen(x), slim(x)
    report = CompileReport(
        params_before=count_params(model), params_after=count_params(slim),
        mask_params=count_params(model, masks=True), modules_before=len(dag.blocks()),
        modules_after=len(dag.blocks()) - len(dag.dead_modules()), removed=dag.dead_modules(),
        input_shape=list(shape), max_abs_diff=float((ref - out).abs().max()),
        output_scale=float(ref.abs().max()))
    slim.meta["mcgraph"] = {**model.meta["mcgraph"], "dag": dag.to_dict(), "removed": report.removed}
    return slim, report


def save(model: fx.GraphModule, path: str | os.PathLike, **extras: Any) -> Path:
    """Write a masked model as a checkpoint (atomic; loads with weights_only=True)."""
    return write_checkpoint(path, description(model), model.state_dict(), **extras)


def load(path: str | os.PathLike | dict[str, Any], model: nn.Module | None = None) -> fx.GraphModule:
    """Rebuild a masked model from a checkpoint; ``model`` is needed only for unregistered models."""
    ckpt = path if isinstance(path, dict) else read_checkpoint(path)
    d = ckpt["description"]
    where = "load"
    if model is None and not d.get("model"):
        raise McGraphError(where, "checkpoint holds a user model; pass model= to rebuild it")
    try:
        gm = rewrite(model if model is not None else d["model"], d["fan_in"], d["init"],
                     example_input=torch.zeros(1, *d["input_shape"]), modules=d.get("modules"),
                     seed=d["seed"], mask_grad=d.get("mask_grad", "normalized"),
                     aggregate=d.get("aggregate", "mean"), level=d.get("level", "auto"),
                     **d["model_kwargs"])
        gm.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise McGraphError(where, f"checkpoint does not describe a loadable model: {first[:200]}") from None
    for m in mask_modules(gm):
        if bool(m.frozen):
            m.mask.requires_grad_(False)
    return gm
