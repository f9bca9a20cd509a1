"""Side-by-side onnxruntime benchmark: latency percentiles, throughput, MACs, and ratios to a
baseline measured interleaved in the same run.

    res = benchmark(BenchConfig(models=("slim.onnx",), baseline="orig.onnx", batch_sizes=(1, 64)))
    res[0]["vs_baseline"]["64"]      # {"latency": 0.31, "macs": 0.27, "latency_per_mac": 1.15}

Interleaving: for each batch size, every repeat runs each session once in turn, so a slow
moment of the machine lands on all models alike and the ratios stay comparable. Sessions do
not spin their threads between runs (onnxruntime's default): two idle spinning thread pools
would steal the cores of the one being timed (measured: up to 2x on a 2-core machine).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import deploy
from .errors import McGraphError
from .export import read_metadata
from .onnx_stats import initializer_params, onnx_macs, op_counts


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    baseline: str | None = None
    batch_sizes: tuple[int, ...] = (1, 64)
    repeats: int = 30
    warmup: int = 5
    threads: int = 0                  # 0: onnxruntime's default (one per core)
    device: str = "auto"              # auto | cpu | cuda

    def __post_init__(self) -> None:
        if not self.models:
            raise McGraphError("bench", "give at least one ONNX model")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise McGraphError("bench", f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 0:
            raise McGraphError("bench", "--repeats must be >= 1, --warmup and --threads >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise McGraphError("bench", f"unknown device '{self.device}'")


def _describe(path: str, sess: Any) -> dict[str, Any]:
    inp = sess.get_inputs()[0]
    try:
        macs: int | None = onnx_macs(path)
    except ValueError:
        macs = None                                    # shapes not inferable: say so, not 0
    ops = op_counts(path)
    # one parameter count: the learned weights compile reported, recorded in the file; only
    # for a file mcgraph did not write, the elements of its initializers
    known = read_metadata(path).get("params")
    return {"model": path, "provider": sess.get_providers()[0],
            "params": known if known is not None else initializer_params(path),
            "params_counted": "mcgraph" if known is not None else "initializers",
            "macs": macs, "conv_nodes": ops.get("Conv", 0) + ops.get("QLinearConv", 0),
            "ops": ops, "input_type": inp.type}


def _timings(sessions: list[Any], batch: int, shape: tuple[int, ...], repeats: int,
             warmup: int) -> list[list[float]]:
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    runs = [deploy.runner(s, x) for s in sessions]      # device-resident I/O on CUDA
    for _ in range(warmup):
        for go in runs:
            go()
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for i, go in enumerate(runs):
            t = time.perf_counter()
            go()
            times[i].append((time.perf_counter() - t) * 1e3)
    return times


def benchmark(cfg: BenchConfig) -> list[dict[str, Any]]:
    """One entry per model (the baseline first, marked ``baseline: true``): description, and per
    batch size ``latency_ms`` (p50), ``p90_ms``, ``throughput`` (images/s) and, beside a
    baseline, ``vs_baseline`` = {latency: p50 / baseline p50, macs: MACs / baseline MACs,
    latency_per_mac: their quotient}."""
    paths = ([cfg.baseline] if cfg.baseline else []) + list(cfg.models)
    for p in paths:
        if not Path(p).is_file():
            raise McGraphError("bench", f"{p} does not exist")
    sessions = [deploy.make_session(p, cfg.device, cfg.threads, spin=False) for p in paths]
    shapes = {tuple(s.get_inputs()[0].shape[1:]) for s in sessions}
    if len(shapes) != 1 or any(not isinstance(d, int) for d in next(iter(shapes))):
        raise McGraphError("bench",
                           f"the models take different or unknown inputs: {sorted(shapes)}")
    shape = next(iter(shapes))
    entries = [{**_describe(p, s), "baseline": bool(cfg.baseline) and i == 0,
                "latency_ms": {}, "p90_ms": {}, "throughput": {}}
               for i, (p, s) in enumerate(zip(paths, sessions))]
    for b in cfg.batch_sizes:
        for e, t in zip(entries, _timings(sessions, b, shape, cfg.repeats, cfg.warmup)):
            p50, p90 = float(np.percentile(t, 50)), float(np.percentile(t, 90))
            e["latency_ms"][str(b)], e["p90_ms"][str(b)] = p50, p90
            e["throughput"][str(b)] = b / (p50 / 1e3)
    if cfg.baseline:
        base = entries[0]
        for e in entries[1:]:
            e["vs_baseline"] = {}
            for b in map(str, cfg.batch_sizes):
                lat = e["latency_ms"][b] / base["latency_ms"][b]
                macs = e["macs"] / base["macs"] if e["macs"] and base["macs"] else None
                e["vs_baseline"][b] = {"latency": lat, "macs": macs,
                                       "latency_per_mac": lat / macs if macs else None}
    for e in entries:
        e.update(threads=cfg.threads, repeats=cfg.repeats, warmup=cfg.warmup)
    return entries
