"""mcgraph inspect masked.pt"""
from __future__ import annotations

import click

from ..api import load
from ..ir import ModuleDAG
from . import main
from ._common import emit_json, table


@main.command("inspect")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the connectivity as JSON.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also draw the DAG and the mask heat map into this PNG.")
def inspect_cmd(checkpoint, as_json, png):
    """Show the connectivity: per module its candidates, mask values and chosen inputs."""
    from ..pipeline import check_out_path
    if png:
        check_out_path(png, "inspect")
    dag = ModuleDAG.from_graph_module(load(checkpoint))
    if png:
        from ..plot import plot_connectivity
        plot_connectivity(dag, png, title=checkpoint)
    if as_json:
        emit_json({"modules": [_entry(dag, b) for b in dag.blocks()],
                   "dead": dag.dead_modules(), "dag": dag.to_dict()})
        return
    rows = []
    for b in dag.blocks():
        e = _entry(dag, b)
        vals = " ".join(f"{v:.2f}" for v in e["values"])
        rows.append([b, len(e["candidates"]), ", ".join(e["chosen"]), vals])
    click.echo(table(rows, ["module", "candidates", "chosen inputs", "mask values (candidate order)"]))
    dead = dag.dead_modules()
    click.echo(f"dead after freeze: {', '.join(dead) if dead else 'none'}")


def _entry(dag: ModuleDAG, b: str) -> dict:
    return {"module": b, "candidates": dag.candidates(b),
            "values": [dag.graph.edges[c, b]["mask"] for c in dag.candidates(b)],
            "chosen": dag.chosen_inputs(b), "frozen": dag.graph.nodes[b]["frozen"]}
