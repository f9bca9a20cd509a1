"""Whole jobs behind the CLI commands: rewrite to a checkpoint, compile a checkpoint to ONNX."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from . import deploy
from .api import CompileReport, compile, count_params, load, rewrite, save
from .config import CompileConfig, RewriteConfig
from .errors import McGraphError
from .ir import ModuleDAG
from .masks import mask_modules
from .passes import export_onnx


def check_out_path(path: str | Path, where: str) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise McGraphError(where, f"output directory {path.parent} does not exist")
    return path


def rewrite_to_checkpoint(cfg: RewriteConfig) -> dict[str, Any]:
    out = check_out_path(cfg.out, "rewrite")
    gm = rewrite(cfg.model, cfg.fan_in, cfg.init, modules=cfg.modules, seed=cfg.seed,
                 num_classes=cfg.num_classes, in_channels=cfg.in_channels,
                 input_size=cfg.input_size, weights=cfg.weights, mask_grad=cfg.mask_grad,
                 aggregate=cfg.aggregate)
    save(gm, out)
    dag = ModuleDAG.from_graph_module(gm)
    return {"checkpoint": str(out), "model": cfg.model, "fan_in": cfg.fan_in, "init": cfg.init,
            "level": dag.level, "modules": len(dag.blocks()),
            "candidate_edges": sum(m.rows * m.num_candidates for m in mask_modules(gm)),
            "params": count_params(gm), "mask_params": count_params(gm, masks=True),
            "input_shape": gm.meta["mcgraph"]["rewrite"]["input_shape"]}


def compile_checkpoint(cfg: CompileConfig) -> CompileReport:
    """Freeze, eliminate dead modules, export, and check ONNX Runtime against PyTorch."""
    out = check_out_path(cfg.out, "compile")
    if cfg.report:
        check_out_path(cfg.report, "compile")
    t0 = time.perf_counter()
    masked = load(cfg.checkpoint)
    slim, report = compile(masked)
    staged = out.with_name(f".{out.name}.unverified")     # a failed check never replaces `out`
    try:
        export_onnx(slim, staged, tuple(report.input_shape), opset=cfg.opset)
        report.opset, report.onnx_ops = deploy.opset(staged), deploy.op_counts(staged)
        if cfg.verify:
            report.onnx_max_abs_diff = verify_onnx(masked, staged, cfg)
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    report.onnx_path = str(out)
    report.seconds = round(time.perf_counter() - t0, 2)
    if cfg.report:
        import json
        Path(cfg.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def verify_onnx(masked: torch.nn.Module, path: Path, cfg: CompileConfig) -> float:
    """Max |onnxruntime - frozen PyTorch| over the batch sizes; raise past the tolerance."""
    from .masks import freeze_masks
    import copy
    ref_model = freeze_masks(copy.deepcopy(masked)).eval()
    shape = tuple(masked.meta["mcgraph"]["rewrite"]["input_shape"])
    sess = deploy.make_session(path, device="cpu")
    worst = 0.0
    for i, b in enumerate(cfg.batch_sizes):
        x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ref = ref_model(x).numpy()
        got = deploy.run(sess, x)
        diff = float(abs(ref - got).max())
        tol = cfg.tolerance * max(1.0, float(abs(ref).max()))
        if diff > tol:
            raise McGraphError("compile", f"onnxruntime differs from PyTorch at batch {b}: "
                                          f"max |diff| {diff:.3g} > tolerance {tol:.3g}")
        worst = max(worst, diff)
    return worst
