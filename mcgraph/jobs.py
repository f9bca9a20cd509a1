"""Whole jobs behind the CLI commands: rewrite to a checkpoint, compile a checkpoint to ONNX."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from . import deploy
from .api import CompileReport, compile, count_params, load, rewrite, save
from .config import CompileConfig, RewriteConfig
from .errors import McGraphError
from .io import atomic_path, check_out_path, write_text_atomic
from .ir import dag_of
from .masks import mask_modules
from .passes import export_onnx


def rewrite_to_checkpoint(cfg: RewriteConfig) -> dict[str, Any]:
    out = check_out_path(cfg.out, "rewrite")
    gm = rewrite(cfg.model, cfg.fan_in, cfg.init, modules=cfg.modules, seed=cfg.seed,
                 num_classes=cfg.num_classes, in_channels=cfg.in_channels,
                 input_size=cfg.input_size, weights=cfg.weights, mask_grad=cfg.mask_grad,
                 aggregate=cfg.aggregate, level=cfg.level)
    save(gm, out)
    dag = dag_of(gm)
    return {"checkpoint": str(out), "model": cfg.model, "fan_in": cfg.fan_in, "init": cfg.init,
            "level": dag.level, "modules": len(dag.blocks()),
            "candidate_edges": sum(m.rows * m.num_candidates for m in mask_modules(gm)),
            "params": count_params(gm), "mask_params": count_params(gm, masks=True),
            "input_shape": gm.meta["mcgraph"]["rewrite"]["input_shape"]}


def compile_checkpoint(cfg: CompileConfig) -> CompileReport:
    """Freeze, eliminate dead modules, export, and check ONNX Runtime against PyTorch.

    ``cfg.out`` is replaced only once the exported file passed the onnxruntime check."""
    out = check_out_path(cfg.out, "compile")
    if cfg.report:
        check_out_path(cfg.report, "compile")
    t0 = time.perf_counter()
    masked = load(cfg.checkpoint)
    slim, report = compile(masked)
    with atomic_path(out, "compile") as staged:
        export_onnx(slim, staged, tuple(report.input_shape), opset=cfg.opset)
        report.opset, report.onnx_ops = deploy.opset(staged), deploy.op_counts(staged)
        if cfg.verify:
            report.onnx_max_abs_diff = verify_onnx(masked, staged, cfg.batch_sizes, cfg.tolerance)
    report.onnx_path = str(out)
    report.seconds = round(time.perf_counter() - t0, 2)
    if cfg.report:
        write_text_atomic(cfg.report, json.dumps(report.to_dict(), indent=2) + "\n", "compile")
    return report


def verify_onnx(masked: torch.nn.Module, path: Path, batch_sizes: tuple[int, ...] = (1, 4),
                tolerance: float = 1e-4) -> float:
    """Max |onnxruntime - masked model in eval| over the batch sizes; raise past the tolerance.
    (Eval of the masked model reads the top-K, which is what freezing fixes.)"""
    shape = tuple(masked.meta["mcgraph"]["rewrite"]["input_shape"])
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
