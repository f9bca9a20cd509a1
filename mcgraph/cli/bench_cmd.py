"""mcgraph bench model.onnx [other.onnx ...]"""
from __future__ import annotations

import click

from . import main
from ._common import emit_json, table


@main.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--batch-sizes", default="1,64", show_default=True, help="Comma-separated batch sizes.")
@click.option("--repeats", type=int, default=30, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(models, batch_sizes, repeats, device, as_json):
    """onnxruntime latency of ONNX files side by side (median ms per batch), with their sizes."""
    from ..deploy import initializer_params, latency_ms, make_session, op_counts
    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1,64, got '{batch_sizes}'") from None
    if not sizes or min(sizes) < 1 or repeats < 1:
        raise click.BadParameter("batch sizes and --repeats must be >= 1")
    rows, out = [], []
    for path in models:
        sess = make_session(path, device=device)
        shape = sess.get_inputs()[0].shape[1:]
        lat = {b: latency_ms(sess, (b, *shape), repeats=repeats) for b in sizes}
        entry = {"model": path, "provider": sess.get_providers()[0],
                 "params": initializer_params(path), "conv_nodes": op_counts(path).get("Conv", 0),
                 "latency_ms": lat}
        out.append(entry)
        rows.append([path, entry["params"], entry["conv_nodes"], *[f"{lat[b]:.3f}" for b in sizes]])
    if as_json:
        emit_json(out)
    else:
        click.echo(table(rows, ["model", "params", "Conv", *[f"ms @ {b}" for b in sizes]]))
