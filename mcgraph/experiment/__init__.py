"""Experiments: a spec of tables (configs x models x seeds), run resumably, rendered to markdown.

    from mcgraph.experiment import load_spec, run_experiment, render
"""
from .render import render
from .runner import PlannedRun, finish_run, plan, run_experiment, select_best
from .spec import Run, Spec, load_spec, parse_spec, resolve_refs

__all__ = ["PlannedRun", "Run", "Spec", "finish_run", "load_spec", "parse_spec", "plan", "render",
           "resolve_refs", "run_experiment", "select_best"]
