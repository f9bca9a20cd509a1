"""mcgraph bench model.onnx [other.onnx ...] [--baseline original.onnx]"""
from __future__ import annotations

import click

from ..bench import BenchConfig
from . import main
from ._common import config_option, emit_json, table

B = BenchConfig


def _sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in value.split(",") if b.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1,64, got '{value}'") from None


@main.command("bench", short_help="Time ONNX files side by side.")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@config_option(B, "baseline", type=click.Path(dir_okay=False),
               help="Reference ONNX file (the original model): ratios are measured against it, "
                    "interleaved in the same run.")
@click.option("--batch-sizes", default="1,64", show_default=True, callback=_sizes,
              help="Comma-separated batch sizes.")
@config_option(B, "repeats", type=int, help="Timed runs per model and batch size.")
@config_option(B, "warmup", type=int, help="Untimed runs first.")
@config_option(B, "threads", type=int, help="onnxruntime intra-op threads (0: one per core).")
@config_option(B, "device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(models, baseline, batch_sizes, repeats, warmup, threads, device, as_json):
    """Time ONNX files in onnxruntime side by side: latency, throughput, parameters, MACs.

    \b
    mcgraph bench slim.onnx --baseline original.onnx --batch-sizes 1,64

    With --baseline, latency and MAC ratios to it are measured interleaved (a slow moment of the
    machine lands on every model alike). --device cuda uses the CUDA provider with the input
    bound on the device (IOBinding)."""
    from ..bench import benchmark
    cfg = BenchConfig(models=tuple(models), baseline=baseline, batch_sizes=batch_sizes,
                      repeats=repeats, warmup=warmup, threads=threads, device=device)
    res = benchmark(cfg)
    if as_json:
        emit_json(res)
        return
    rows = []
    for e in res:
        for b in map(str, cfg.batch_sizes):
            r = e.get("vs_baseline", {}).get(b, {})
            rows.append([e["model"] + (" (baseline)" if e["baseline"] else ""), b,
                         e["params"], "-" if e["macs"] is None else f"{e['macs'] / 1e6:.1f}M",
                         f"{e['latency_ms'][b]:.3f}", f"{e['p90_ms'][b]:.3f}",
                         f"{e['throughput'][b]:.0f}", _x(r.get("latency")), _x(r.get("macs")),
                         _x(r.get("latency_per_mac"), "")])
    click.echo(f"provider {res[0]['provider']}, threads {threads or 'default'}, "
               f"{repeats} repeats after {warmup} warmup, interleaved")
    click.echo(table(rows, ["model", "batch", "params", "MACs", "p50 ms", "p90 ms", "img/s",
                            "latency ratio", "MAC ratio", "latency/MAC"]))


def _x(v: float | None, suffix: str = "x") -> str:
    return "-" if v is None else f"{v:.2f}{suffix}"
