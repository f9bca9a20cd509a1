"""Compile a masked model, export it to ONNX and time it in onnxruntime: the one helper the
experiment runner, the demo and the benchmarks share.

    m = compile_export_time(masked, "run/model.onnx")          # batch 1 and 64, on the CPU
    m.report.params_after, m.latency_ms[64], m.onnx_path

The original network for comparison is :func:`original_onnx` (same architecture, every block,
no masks); timing several ONNX files side by side is :func:`mcgraph.bench.benchmark`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import fx

from . import deploy
from .api import CompileReport, compile
from .passes import export_onnx

BATCHES = (1, 64)
REPEATS = {1: 50, 64: 20}            # median of this many runs per batch size


@dataclass
class Measured:
    slim: fx.GraphModule
    report: CompileReport
    onnx_path: Path
    latency_ms: dict[int, float] = field(default_factory=dict)   # batch -> median ms
    provider: str = ""
    macs: int | None = None            # one image, counted from the ONNX graph


def time_onnx(path: str | Path, shape: tuple[int, ...], batches: tuple[int, ...] = BATCHES,
              repeats: dict[int, int] | None = None,
              device: str = "cpu") -> tuple[dict[int, float], str]:
    """Median latency of ``path`` per batch size (and the provider that ran it)."""
    sess = deploy.make_session(path, device=device)
    reps = {**REPEATS, **(repeats or {})}
    return ({b: deploy.latency_ms(sess, (b, *shape), repeats=reps.get(b, 20)) for b in batches},
            sess.get_providers()[0])


def compile_export_time(masked: fx.GraphModule, onnx_path: str | Path, *,
                        batches: tuple[int, ...] = BATCHES, repeats: dict[int, int] | None = None,
                        device: str = "cpu", verify: bool = False, data: Any = None) -> Measured:
    """:func:`mcgraph.compile`, export to ``onnx_path`` and time it; ``verify`` also checks the
    file against the masked model in onnxruntime (report.onnx_max_abs_diff); ``data``: the
    data set's description for the file's metadata (:func:`mcgraph.datainfo.checkpoint_data`)."""
    slim, report = compile(masked)
    shape = tuple(report.input_shape)
    path = export_onnx(slim, Path(onnx_path), shape, data=data, params=report.params_after)
    if verify:
        from .jobs import verify_onnx
        report.onnx_max_abs_diff = verify_onnx(masked, path)
    lat, provider = time_onnx(path, shape, batches, repeats, device)
    from .onnx_stats import onnx_macs
    return Measured(slim, report, path, lat, provider, onnx_macs(path))


def original_onnx(masked: fx.GraphModule, path: str | Path) -> Path:
    """The original network of ``masked`` (same architecture, no masks, every block), exported:
    the baseline for size and latency. Its weights are fresh; latency and size do not depend on
    their values."""
    from . import graph_meta
    from .models import create_model
    rw = graph_meta.rewrite_record(masked)
    original = create_model(rw["model"], **rw["model_kwargs"]).eval()
    return export_onnx(original, Path(path), tuple(rw["input_shape"]))
