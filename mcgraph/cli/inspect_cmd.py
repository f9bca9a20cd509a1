"""mcgraph inspect masked.pt"""
from __future__ import annotations

import click

from ..api import load
from ..io import check_out_path
from ..explain import explanation_of
from ..ir import dag_of
from . import main
from ._common import emit_json, explain_table, table, trust_code_option


@main.command("inspect")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the connectivity as JSON.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the DAG and the mask heat map into this PNG.")
@click.option("--explain", is_flag=True, help="Also show why each module is a block or not and "
              "the inputs no adapter can reach.")
@trust_code_option()
def inspect_cmd(checkpoint, as_json, png, explain, trust_code):
    """Show the connectivity: per module its candidates, mask values and chosen inputs."""
    if png:
        check_out_path(png, "inspect")
    gm = load(checkpoint, trust_code=trust_code)
    dag, ex = dag_of(gm), explanation_of(gm)
    if png:
        from ..plot import plot_connectivity
        plot_connectivity(dag, png, title=checkpoint)
    if as_json:
        emit_json({"modules": [dag.entry(b) for b in dag.blocks()],
                   "dead": dag.dead_modules(), "dag": dag.to_dict(), "discovery": ex.to_dict()})
        return
    rows = []
    for b in dag.blocks():
        e = dag.entry(b)
        vals = " ".join(f"{v:.2f}" for v in e["values"])
        rows.append([b, len(e["candidates"]), ", ".join(e["chosen"]), vals])
    click.echo(table(rows, ["module", "candidates", "chosen inputs", "mask values (candidate order)"]))
    dead = dag.dead_modules()
    click.echo(f"dead after freeze: {', '.join(dead) if dead else 'none'}")
    if explain:
        click.echo(explain_table(ex))
