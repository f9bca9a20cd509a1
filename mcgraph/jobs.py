"""Whole jobs behind the CLI commands: rewrite to a checkpoint, compile a checkpoint to ONNX."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from . import deploy, graph_meta, precision
from .accuracy import check_classes
from .api import CompileReport, compile, count_params, load, rewrite, save
from .config import CompileConfig, RewriteConfig
from .datainfo import checkpoint_data
from .errors import McGraphError
from .io import atomic_path, check_out_path, write_text_atomic
from .ir import dag_of
from .mask_ops import freeze_masks
from .masks import mask_modules
from .passes import export_onnx
from .readiness import wiring_state


def rewrite_to_checkpoint(cfg: RewriteConfig) -> dict[str, Any]:
    out = check_out_path(cfg.out, "rewrite")
    gm = rewrite(cfg.model, cfg.fan_in, cfg.init, modules=cfg.modules, seed=cfg.seed,
                 num_classes=cfg.num_classes, in_channels=cfg.in_channels,
                 input_size=cfg.input_size, weights=cfg.weights, mask_grad=cfg.mask_grad,
                 aggregate=cfg.aggregate, level=cfg.level, model_args=dict(cfg.model_args))
    save(gm, out)
    dag = dag_of(gm)
    rw = graph_meta.rewrite_record(gm)
    args = {"model_args": rw["model_args"]} if rw.get("model_args") else {}
    return {"checkpoint": str(out), "model": rw["model"], **args, **rw["model_kwargs"],
            "fan_in": cfg.fan_in, "init": cfg.init,
            "level": dag.level, "modules": len(dag.blocks()),
            "candidate_edges": sum(m.rows * m.num_candidates for m in mask_modules(gm)),
            "params": count_params(gm), "mask_params": count_params(gm, masks=True),
            "input_shape": rw["input_shape"]}


def compile_checkpoint(cfg: CompileConfig) -> CompileReport:
    """Freeze, eliminate dead modules, export fp32 ONNX and check onnxruntime against PyTorch;
    then, for ``cfg.precision`` fp16 or int8, convert that file (see :mod:`mcgraph.precision`).
    With ``cfg.data``, the report holds each precision's top-1 on the test split.

    ``cfg.out`` (the requested precision) is replaced only once every check passed."""
    out = check_out_path(cfg.out, "compile")
    if cfg.report:
        check_out_path(cfg.report, "compile")
    _check_opset(cfg.opset)
    t0 = time.perf_counter()
    masked = load(cfg.checkpoint, trust_code=cfg.trust_code)
    shape = graph_meta.input_shape(masked)
    data = precision.load_matching_data(cfg.data, cfg.data_dir, shape) if cfg.data else None
    if data is not None:           # before any export: a mismatch would only show at top-1
        check_classes("compile", cfg.checkpoint, graph_meta.num_classes(masked), data.spec.name,
                      data.spec.num_classes)
    masked, note = freeze_learning_masks(masked, data)
    slim, report = compile(masked)
    report.notes += [note] if note else []
    report.precision = cfg.precision
    with atomic_path(out, "compile") as staged, \
            tempfile.TemporaryDirectory(prefix="mcgraph-compile-") as tmp:
        fp32 = staged if cfg.precision == "fp32" else Path(tmp) / "fp32.onnx"
        export_onnx(slim, fp32, tuple(report.input_shape), opset=cfg.opset,
                    data=checkpoint_data(cfg.checkpoint), params=report.params_after)
        if cfg.verify:
            report.onnx_max_abs_diff = verify_onnx(masked, fp32, cfg.batch_sizes, cfg.tolerance)
        _convert_precision(cfg, report, fp32, staged, data, shape)
        report.opset, report.onnx_ops = deploy.opset(staged), deploy.op_counts(staged)
        if deploy.opset(fp32) != cfg.opset:
            raise McGraphError("compile", f"asked for opset {cfg.opset}, the exporter wrote "
                                          f"{deploy.opset(fp32)}", "opset")
        if data is not None:
            models = {"fp32": fp32, cfg.precision: staged}    # at fp32: one entry, one file
            ev = precision.top1_on_test_split(models, data, cfg.eval_images)
            report.top1, report.agreement = ev.top1, ev.agreement
            report.notes += ev.notes
            report.eval_images = ev.images
    report.onnx_path = str(out)
    report.seconds = round(time.perf_counter() - t0, 2)
    if cfg.report:
        write_text_atomic(cfg.report, json.dumps(report.to_dict(), indent=2) + "\n", "compile")
    return report


def _check_opset(opset: int) -> None:
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:   # the exporter would silently write opset 18 instead
        raise McGraphError("compile", f"opset must be at most {newest} (the newest this onnx "
                                      f"package knows), got {opset}", "opset")


def _convert_precision(cfg: CompileConfig, report: CompileReport, fp32: Path, staged: Path,
                       data: Any, shape: tuple[int, ...]) -> None:
    """For ``cfg.precision`` fp16 or int8, write ``staged`` from the verified ``fp32`` file and
    record in ``report`` how far it is from fp32 (nothing to do at fp32: the same file)."""
    if cfg.precision == "int8":
        assert data is not None                       # CompileConfig requires it
        report.quantization = precision.quantize_int8(
            fp32, staged, data, images=cfg.calib_images, seed=cfg.calib_seed,
            per_channel=cfg.per_channel, scheme=cfg.int8_scheme)
    elif cfg.precision == "fp16":
        precision.convert_fp16(fp32, staged)
    if cfg.precision != "fp32" and (cfg.verify or cfg.precision == "int8"):
        # fp16 is a correctness check (reference evaluator, tolerance); int8 is reported only
        inputs = precision.check_inputs(shape, cfg.batch_sizes, data)
        report.precision_max_abs_diff = precision.compare_to_fp32(
            staged, fp32, cfg.precision, inputs,
            cfg.fp16_tolerance if cfg.precision == "fp16" else None)
        if cfg.precision == "fp16":
            report.notes.append("fp16 checked against fp32 with onnx's reference evaluator "
                                f"(float16 arithmetic) on {sum(cfg.batch_sizes)} "
                                f"{'test' if data else 'random'} images")


def freeze_learning_masks(masked: torch.fx.GraphModule,
                          data: Any) -> tuple[torch.fx.GraphModule, str]:
    """A checkpoint whose masks were still learning, given data: freeze the masks to their top-K
    and re-estimate BatchNorm's statistics for that wiring on training batches (what the
    trainer's evaluation does), and say so. Without data, or when no mask learns, unchanged
    (:func:`mcgraph.compile` then refuses what is not decided)."""
    state = wiring_state(masked)
    if data is None or not state.learning:
        return masked, ""
    import itertools

    from .config import default
    from .train.config import TrainConfig
    from .train.data import make_loader
    from .train.metrics import recalibrate_bn
    freeze_masks(masked)
    n, bs = default(TrainConfig, "bn_recalibration_batches"), default(TrainConfig, "batch_size")
    batches = make_loader(data, "train", bs, shuffle=True, augment=False, seed=0)
    masked = recalibrate_bn(masked, itertools.islice(iter(batches), n))
    return masked, (f"{len(state.learning)} masks were still learning ({state.steps} steps): froze "
                    f"them to their top-K and re-estimated BatchNorm on {n} training batches of "
                    f"{data.spec.name}; the weights never trained on this wiring alone")


def verify_onnx(masked: torch.nn.Module, path: Path, batch_sizes: tuple[int, ...] = (1, 4),
                tolerance: float = 1e-4) -> float:
    """Max |onnxruntime - masked model in eval| over the batch sizes; raise past the tolerance.
    (Eval of the masked model reads the top-K, which is what freezing fixes.)"""
    shape = graph_meta.input_shape(masked)
    sess = deploy.make_session(path, device="cpu")
    was = masked.training
    masked.eval()
    worst = 0.0
    try:
        for i, b in enumerate(batch_sizes):
            x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(100 + i))
            with torch.no_grad():
                ref = masked(x.to(next(masked.parameters()).device)).cpu().numpy()
            diff = float(abs(ref - deploy.run(sess, x)).max())
            tol = tolerance * max(1.0, float(abs(ref).max()))
            if diff > tol:
                raise McGraphError("compile", f"onnxruntime differs from PyTorch at batch {b}: "
                                              f"max |diff| {diff:.3g} > tolerance {tol:.3g}")
            worst = max(worst, diff)
    finally:
        masked.train(was)
    return worst


def compile_file(checkpoint: str | os.PathLike, out: str | os.PathLike,
                 **options: Any) -> CompileReport:
    """``mcgraph compile`` from Python: compile a checkpoint to a verified ONNX file that carries
    its metadata (data set, normalization, class names, wiring). ``options`` are
    :class:`~mcgraph.config.CompileConfig` fields (``precision``, ``data``, ``opset``, ...)."""
    return compile_checkpoint(CompileConfig(checkpoint=str(checkpoint), out=str(out), **options))
