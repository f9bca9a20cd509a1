"""mcgraph experiment SPEC [--out DIR] [--seeds N] [--only CONFIG] [--render PAGE.md]"""
from __future__ import annotations

import click

from . import main
from ._common import table


@main.command("experiment", short_help="Run and render a grid of training runs.")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", default="runs/experiment", show_default=True,
              help="Root of the run directories.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Run seeds 0..N-1 in every table (instead of the spec's).")
@click.option("--table", "tables", multiple=True, metavar="TABLE",
              help="Only these tables of SPEC; repeat or separate with commas.")
@click.option("--only", multiple=True, metavar="CONFIG",
              help="Only these configs (and those they reference); repeat or separate with commas.")
@click.option("--render", "render_to", default=None, metavar="PAGE.md",
              help="Write the results page (and PAGE/ with pictures and run files) at the end.")
@click.option("--render-only", is_flag=True,
              help="Re-render from the run files under --out; train nothing.")
@click.option("--dry-run", is_flag=True, help="List the runs and their state; train nothing.")
@click.option("--remeasure-latency", is_flag=True,
              help="Time every done run's compiled model again, side by side; train nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def experiment_cmd(spec, out, seeds, tables, only, render_to, render_only, dry_run,
                   remeasure_latency, no_progress):
    """Run a grid of training runs from SPEC (JSON or TOML), resumably, and render its results.

    \b
    mcgraph experiment experiments/results.json --table table1 --seeds 3 --render docs/results.md
    mcgraph experiment tables.json --render-only --out docs/results/runs --render docs/results.md

    Finished runs are skipped and stopped ones resumed; each run is compiled and timed in
    onnxruntime."""
    from ..experiment import load_spec, plan, render, run_experiment
    from ..experiment.render import check_page
    from ..experiment.spec import check_dir_path
    check_dir_path(out, "run root")         # every mode: one line now, not after the runs
    if render_to:
        check_page(render_to)
    only_list = [c for o in only for c in o.split(",") if c] or None
    table_list = [t for o in tables for t in o.split(",") if t] or None
    if remeasure_latency:
        from ..experiment.runner import remeasure_latency as remeasure
        n = remeasure(spec, out, seeds=seeds, log=click.echo, tables=table_list)
        click.echo(f"{n} runs measured")
        return
    if render_only:
        if not render_to:
            raise click.UsageError("--render-only needs --render PAGE.md")
        click.echo(f"rendered {render(load_spec(spec), out, render_to, seeds=seeds)}")
        return
    if dry_run:
        planned = plan(load_spec(spec), out, seeds=seeds, only=only_list, tables=table_list)
        rows = [[p.state, p.run.label, ", ".join(f"{k}=run:{v}" for k, v in p.refs.items())]
                for p in planned]
        click.echo(table(rows, ["state", "run", "references"]))
        counts = {s: sum(p.state == s for p in planned) for s in ("done", "resume", "new")}
        click.echo(f"{len(planned)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        return
    run_experiment(spec, out, seeds=seeds, only=only_list, tables=table_list, render_to=render_to,
                   progress=not no_progress, log=click.echo)
