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

from . import graph_meta
from .checkpoint import VERSION, read_checkpoint, write_checkpoint
from .config import RewriteConfig, default
from .errors import McGraphError, state_dict_error
from .ir import carried_dag, dag_of
from .masks import mask_modules
from .passes import pipelines, probe_input, run_passes
from .readiness import wiring_state
from .sources import adapt_io, build_model, io_channels, parse_source
from .tracing import annotate_shapes, trace

_RW = RewriteConfig


def count_params(model: nn.Module, masks: bool = False) -> int:
    """Weights of ``model``; mask parameters only when ``masks`` is True."""
    mask_ids = {id(m.mask) for m in mask_modules(model)}
    return sum(p.numel() for p in model.parameters() if (id(p) in mask_ids) == masks)


def description(model: fx.GraphModule) -> dict[str, Any]:
    """The plain description a checkpoint stores (see :func:`save`): how to rebuild the model,
    and its connectivity read from the DAG the graph carries."""
    if not graph_meta.has_record(model):
        raise McGraphError("save", "the model was not produced by mcgraph.rewrite")
    if not mask_modules(model):     # its state dict is not the masked model's: it would not load
        raise McGraphError("save", "the model has no masks (it was compiled); save the masked "
                                   "model, or export the compiled one with export_onnx")
    dag = dag_of(model)
    masks = {b: {k: v for k, v in dag.entry(b).items() if k != "module"} for b in dag.blocks()}
    return {**graph_meta.rewrite_record(model), "masks": masks}


def rewrite(model: nn.Module | str, fan_in: int, init: str = default(_RW, "init"),
            example_input: torch.Tensor | None = None,
            modules: Iterable[type | str] | None = None, seed: int = default(_RW, "seed"), *,
            num_classes: int | None = default(_RW, "num_classes"),
            in_channels: int | None = default(_RW, "in_channels"),
            input_size: tuple[int, int] | None = None, weights: str | None = None,
            mask_grad: str = default(_RW, "mask_grad"), aggregate: str = default(_RW, "aggregate"),
            level: str = default(_RW, "level"),
            model_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Trace ``model`` (or build the model a source string names) and insert masks.

    A string is a model source (:mod:`mcgraph.sources`): a registered name, ``torchvision:NAME``,
    ``timm:NAME``, ``path/file.py:factory`` or ``package.module:factory``, built with the keyword
    arguments ``model_args``. ``num_classes`` / ``in_channels`` adapt the head and the stem
    (None: the source's own; 10 and 3 for a registered name); the checkpoint records the
    effective values, read back from the model.

    ``level``: ``module`` (masks between residual blocks), ``branch`` (ResNeXt: masks between
    the branches of consecutive blocks) or ``auto`` (branch when every block is a grouped
    bottleneck). The result is a masked ``fx.GraphModule`` carrying its module DAG
    (:mod:`mcgraph.graph_meta`); the original model is not modified. Runs trace,
    annotate_shapes, then the passes find_modules and insert_masks (or split_branches) through
    the driver, which proves the rewrite when it must preserve outputs (K=1 'prev', K=C 'full')."""
    model, name, args, example_input = build(model, model_args, num_classes, in_channels, weights,
                                             input_size, example_input)
    eff_channels, eff_classes = io_channels(model)
    mods = None if modules is None else list(modules)
    mask_pass_args = dict(fan_in=fan_in, init=init, seed=seed, mask_grad=mask_grad)
    gm = annotate_shapes(trace(model, mods), example_input)
    graph_meta.set_rewrite_record(gm, {
        "model": name, "model_args": args,
        "model_kwargs": {"num_classes": eff_classes if eff_classes is not None else num_classes,
                         "in_channels": eff_channels},     # None: no Conv2d to adapt
        "fan_in": int(fan_in), "init": init, "seed": int(seed), "mask_grad": mask_grad,
        "aggregate": aggregate, "level": level, "input_shape": list(example_input.shape[1:]),
        "modules": (None if mods is None
                    else [m if isinstance(m, str) else m.__name__ for m in mods]),
    })
    run_passes(gm, pipelines.analysis(mods, level))
    found = carried_dag(gm).level
    graph_meta.rewrite_record(gm)["level"] = found
    mask_passes = pipelines.masks(found, **mask_pass_args, aggregate=aggregate)
    return run_passes(gm, mask_passes).graph_module


def _check_v1_adapters(gm: fx.GraphModule, d: dict[str, Any], where: Any) -> None:
    """A version-1 checkpoint loads only where its adapters are this version's: the same
    candidates, and each the stride the old rule (smallest that fits) gave."""
    from .passes.find_modules import legacy_adapter_stride
    from .tracing import node_shape
    dag = carried_dag(gm, "load")
    if dag.level != "module":
        return                                  # branch level has no adapters
    shapes = {n.name: node_shape(n) for n in gm.graph.nodes}
    shapes.update({str(n.target): node_shape(n) for n in gm.graph.nodes if n.op == "call_module"})
    nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for b in dag.blocks():
        cands = dag.candidates(b)
        old = (d.get("masks") or {}).get(b, {}).get("candidates")
        if old is not None and list(old) != cands:
            raise McGraphError("load", f"{where} is checkpoint version 1, whose candidates for {b} "
                                       f"were {old}; this version's are {cands} (adapters now "
                                       "follow the network's own stride); rewrite and retrain "
                                       "the model")
        target = node_shape(nodes[b].args[0])            # the block's input (its mask's output)
        for c in cands:
            new = tuple(dag.graph.edges[c, b]["stride"])
            was = legacy_adapter_stride(shapes[c], target)   # type: ignore[arg-type]
            if was != new:
                raise McGraphError("load", f"{where} is checkpoint version 1, whose adapter "
                                           f"{c} -> {b} subsampled by {list(was or ())}; this "
                                           f"version subsamples by {list(new)} (the network's own "
                                           "stride); rewrite and retrain the model")


def build(model: nn.Module | str, model_args: dict[str, Any] | None, num_classes: int | None,
          in_channels: int | None, weights: str | None, input_size: tuple[int, int] | None,
          example_input: torch.Tensor | None) -> tuple[nn.Module, str | None, dict, torch.Tensor]:
    """The model to trace (built from a source string, or a copy of the module, adapted), the
    source and arguments to record, and the example input (from ``input_size`` or the source's
    default size when not given)."""
    name, args = None, dict(model_args or {})
    if isinstance(model, str):
        src = parse_source(model, args)
        model, size = build_model(src, num_classes, in_channels, weights)
        name, args = src.spec, src.args
        input_size = tuple(input_size or size)  # type: ignore[assignment]
    else:
        if args:
            raise McGraphError("rewrite", "model_args are for a model given by name; "
                                          "build the nn.Module with them instead")
        model = adapt_io(copy.deepcopy(model), in_channels, num_classes, "rewrite")
    assert isinstance(model, nn.Module)
    if example_input is None:
        c = io_channels(model)[0] or in_channels or 3
        example_input = torch.randn(1, c, *(input_size or (32, 32)))
    return model, name, args, example_input


def input_shape(model: fx.GraphModule) -> tuple[int, ...]:
    """One sample's (C, H, W) the model was rewritten for."""
    return graph_meta.input_shape(model)


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
    passes: list[dict[str, Any]] = field(default_factory=list)   # the driver's record per pass
    precision: str = "fp32"       # of the file at onnx_path (fp32 | fp16 | int8)
    precision_max_abs_diff: float | None = None   # that file vs the fp32 export, random inputs
    quantization: dict[str, Any] = field(default_factory=dict)   # int8: how it was calibrated
    top1: dict[str, float] = field(default_factory=dict)   # test split, per precision (with data)
    agreement: dict[str, float] = field(default_factory=dict)   # argmax equal to fp32's, percent
    eval_images: int | None = None
    notes: list[str] = field(default_factory=list)
    wiring: str = ""              # how decided the compiled wiring was (mcgraph.readiness)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compile_passes(model: fx.GraphModule) -> list:
    """The compile pipeline for ``model``'s level
    (:func:`mcgraph.passes.pipelines.compile_passes`)."""
    return pipelines.compile_passes(carried_dag(model, "compile").level, _full(model))


def optimize_passes(model: fx.GraphModule) -> list:
    """The inference rewrites for ``model``'s level (:func:`mcgraph.passes.pipelines.optimize`)."""
    return pipelines.optimize(carried_dag(model, "compile").level, _full(model))


def _full(model: fx.GraphModule) -> bool:
    """Branch level with every row's eval choice reading all C branches (Fixed-Full, K = C)."""
    from .branches import BranchBlock
    blocks = [m for m in model.modules() if isinstance(m, BranchBlock)]
    return bool(blocks) and all(bool(b.mask.eval_binary().all()) for b in blocks)


def compile(model: fx.GraphModule, check_batch: int = 4, optimize: bool = True,
            check_wiring: bool = True) -> tuple[fx.GraphModule, CompileReport]:
    """Freeze the masks, lower them to plain adds, remove dead modules, then (``optimize``)
    rewrite for inference speed (:func:`optimize_passes`); every pass is checked.

    Returns the slim GraphModule (eval mode, no masks, carrying its DAG) and a
    :class:`CompileReport` whose ``params_after`` counts the pruned model's parameters before
    the inference rewrites fold BatchNorms. The model passed in is not modified.

    A wiring that is not decided is refused (``check_wiring``): masks still learning, or a
    top-K decided by ties (:mod:`mcgraph.readiness`)."""
    if not mask_modules(model):
        raise McGraphError("compile", f"{model._get_name()} has no masks; rewrite it first")
    state = wiring_state(model)
    if check_wiring and state.problem():
        raise McGraphError("compile", str(state.problem()))
    gm = copy.deepcopy(model)
    probe = probe_input(gm, check_batch)
    with torch.no_grad():
        ref = gm.eval()(probe)                     # eval of the masked model = the frozen model
    level, full = carried_dag(gm, "compile").level, _full(gm)     # before the passes change gm
    result = run_passes(gm, pipelines.compile_passes(level, full), probe)
    params_after = count_params(result.graph_module)
    if optimize:
        more = run_passes(result.graph_module, pipelines.optimize(level, full), probe)
        result.graph_module, result.records = more.graph_module, result.records + more.records
    slim = result.graph_module.eval()
    with torch.no_grad():
        out = slim(probe)
    dag = dag_of(slim)
    dead = dag.dead_modules()
    report = CompileReport(
        params_before=count_params(model), params_after=params_after,
        mask_params=count_params(model, masks=True), modules_before=len(dag.blocks()),
        modules_after=len(dag.blocks()) - len(dead), removed=dead,
        input_shape=list(input_shape(model)),
        max_abs_diff=float((ref - out).abs().max()), output_scale=float(ref.abs().max()),
        passes=[asdict(r) for r in result.records], wiring=state.describe())
    return slim, report


def save(model: fx.GraphModule, path: str | os.PathLike, **extras: Any) -> Path:
    """Write a masked model as a checkpoint (atomic; loads with weights_only=True)."""
    return write_checkpoint(path, description(model), model.state_dict(), **extras)


def load(path: str | os.PathLike | dict[str, Any], model: nn.Module | None = None,
         trust_code: bool = False) -> fx.GraphModule:
    """Rebuild a masked model from a checkpoint: from the model source it records, or from
    ``model`` (needed for a user's nn.Module). A file or module source runs the code it names,
    so it is rebuilt only with ``trust_code=True``; registered, torchvision and timm names
    need no trust."""
    ckpt = path if isinstance(path, dict) else read_checkpoint(path)
    d = ckpt["description"]
    where = "load"
    if model is None and not d.get("model"):
        raise McGraphError(where, "checkpoint holds a user model; pass model= to rebuild it")
    extra: dict[str, Any] = {}
    if model is None:
        src = parse_source(d["model"], d.get("model_args") or {})
        if not src.trusted and not trust_code:
            raise McGraphError(where, f"the checkpoint's model is built by code from {src.kind} "
                                      f"source {src.spec}; rebuilding it runs that code, so pass "
                                      "--trust-code (CLI) or trust_code=True (API) if you "
                                      "trust it")
        extra["model_args"] = src.args
    # a user's model is adapted as recorded; checkpoints before model_args recorded the defaults
    try:
        gm = rewrite(model if model is not None else d["model"], d["fan_in"], d["init"],
                     example_input=torch.zeros(1, *d["input_shape"]), modules=d.get("modules"),
                     seed=d["seed"], mask_grad=d.get("mask_grad", "normalized"),
                     aggregate=d.get("aggregate", "mean"), level=d.get("level", "auto"),
                     **extra, **(d["model_kwargs"] if model is None or "model_args" in d else {}))
        if ckpt.get("version", VERSION) < 2:
            _check_v1_adapters(gm, d, path if not isinstance(path, dict) else "the checkpoint")
        gm.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise McGraphError(where, "checkpoint does not describe a loadable model: "
                                  f"{state_dict_error(e)}") from None
    for m in mask_modules(gm):
        if m.is_frozen:
            m.mask.requires_grad_(False)
    return gm
