"""mcgraph inspect masked.pt"""
from __future__ import annotations

import click

from ..api import load
from ..explain import explanation_of
from ..io import check_out_path
from ..ir import dag_of
from . import main
from ._common import emit_json, explain_table, table, trust_code_option


@main.command("inspect", short_help="Show (and explain) a checkpoint's connectivity.")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the connectivity as JSON.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the DAG and the mask heat map into this PNG.")
@click.option("--explain", is_flag=True, help="Also show why each module is a block or not and "
              "the inputs no adapter can reach.")
@click.option("--why", "why_", is_flag=True, help="Also measure, on the validation split of "
              "--data, the loss with each row's input swapped for every other candidate: does "
              "each mask pick what the network prefers?")
@click.option("--data", default=None, help="Data set for --why (its validation split).")
@click.option("--data-dir", default=None)
@click.option("--why-batches", type=click.IntRange(1), default=4, show_default=True,
              help="Validation batches of 250 images per measured wiring.")
@click.option("--bn", type=click.Choice(["batch", "recalibrate"]), default="batch",
              show_default=True, help="--why: BatchNorm of a swapped wiring from each batch's "
              "own statistics, or re-estimated on training batches.")
@trust_code_option()
def inspect_cmd(checkpoint, as_json, png, explain, why_, data, data_dir, why_batches, bn,
                trust_code):
    """Show a checkpoint's connectivity: each module's candidates, mask values and chosen inputs.

    \b
    mcgraph inspect runs/r20/best.pt --png connectivity.png
    mcgraph inspect runs/r20/best.pt --why --data fashion-mnist

    --why measures whether each mask picked the input the network prefers (the validation loss
    with each candidate swapped in)."""
    if png:
        check_out_path(png, "inspect")
    if why_ and not data:
        raise click.UsageError("--why measures on a data set: give --data")
    gm = load(checkpoint, trust_code=trust_code)
    report = _why(gm, checkpoint, data, data_dir, why_batches, bn, png) if why_ else None
    dag, ex = dag_of(gm), explanation_of(gm)
    if png:
        from ..plot import plot_connectivity
        plot_connectivity(dag, png, title=checkpoint)
        click.echo(f"connectivity picture: {png}", err=True)
    if as_json:
        emit_json({"modules": [dag.entry(b) for b in dag.blocks()],
                   "dead": dag.dead_modules(), "dag": dag.to_dict(), "discovery": ex.to_dict(),
                   **({"why": report.to_dict()} if report else {})})
        return
    rows = []
    for b in dag.blocks():
        e = dag.entry(b)
        vals = " ".join(f"{v:.2f}" for v in e["values"])
        rows.append([b, len(e["candidates"]), ", ".join(e["chosen"]), vals])
    click.echo(table(rows, ["module", "candidates", "chosen inputs",
                            "mask values (candidate order)"]))
    dead = dag.dead_modules()
    click.echo(f"dead after freeze: {', '.join(dead) if dead else 'none'}")
    if explain:
        click.echo(explain_table(ex))
    if report:
        from ..why import rows_table
        click.echo(table(rows_table(report), ["row", "chosen", "loss", "best other", "margin",
                                              "spearman", "best?"]))
        s = report.summary()
        rho = "-" if s["mean_spearman"] is None else f"{s['mean_spearman']:+.2f}"
        click.echo(f"why: {s['picked_best']} of {s['rows']} rows picked the loss-best input; "
                   f"mean Spearman(m~, -loss) {rho}; median margin {s['median_margin']:+.4f}; "
                   f"{s['images']} validation images, BatchNorm: {s['bn']}")


def _why(gm, checkpoint: str, data: str, data_dir: str | None, batches: int, bn: str,
         png: str | None):
    from .. import graph_meta
    from ..precision import load_matching_data
    from ..train.split import split_validation
    from ..why import why
    ds = split_validation(load_matching_data(data, data_dir, graph_meta.input_shape(gm), "inspect"))
    report = why(gm, ds, batches=batches, bn=bn)
    if png:
        from pathlib import Path

        from ..plot import plot_why
        p = Path(png)
        out = plot_why(report, p.with_name(p.stem + "_why" + p.suffix), title=checkpoint)
        click.echo(f"why heat map: {out}", err=True)
    return report
