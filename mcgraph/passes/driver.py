"""The pass driver: run a pipeline, lint and recompile after each rewrite, prove each one.

For every pass, in order: ``requires`` -> ``call`` -> (if it modified the graph) lint and
recompile -> ``ensures`` -> the carried module DAG still equals the DAG rebuilt from the masks
-> for passes that preserve outputs, the model before and after on a probe batch (eval mode)
agree within the pass's tolerance, or the pipeline is refused naming the pass and the difference.

    result = run_passes(gm, [Freeze(), LowerMasks(), EliminateDead()])
    slim = result.graph_module
    [(r.name, r.modified, r.max_abs_diff) for r in result.records]
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import fx

from .. import graph_meta
from ..errors import McGraphError, first_line
from ..ir import ModuleDAG, dag_of
from ..masks import mask_modules
from .base import GraphPass


@dataclass
class PassRecord:
    name: str
    modified: bool
    seconds: float
    max_abs_diff: float | None = None     # probe outputs after vs before (None: not compared)
    tolerance: float | None = None


@dataclass
class PipelineResult:
    graph_module: fx.GraphModule
    records: list[PassRecord] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.records)


def probe_input(gm: fx.GraphModule, batch: int = 2, seed: int = 0) -> torch.Tensor | None:
    """A seeded random batch of the shape ``gm`` was rewritten for, on its device (None:
    unknown)."""
    shape = graph_meta.input_shape(gm) if graph_meta.has_record(gm) else None
    if shape is None:
        return None
    p = next(iter(gm.parameters()), None)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    return x.to(p.device) if p is not None else x


@torch.no_grad()
def _outputs(gm: fx.GraphModule, x: torch.Tensor) -> torch.Tensor:
    was = gm.training
    gm.eval()
    try:
        return gm(x)
    finally:
        gm.train(was)


def _recompile(p: GraphPass, gm: fx.GraphModule) -> None:
    try:
        gm.graph.lint()
    except Exception as e:
        raise McGraphError(p.name, f"left an ill-formed graph: {first_line(e)}") from None
    gm.recompile()


def _check_dag(p: GraphPass, gm: fx.GraphModule) -> None:
    if not isinstance(graph_meta.dag(gm), ModuleDAG) or not mask_modules(gm):
        return
    if dag_of(gm) != ModuleDAG.from_graph_module(gm):
        raise McGraphError(p.name,
                           "the module DAG carried on the graph no longer matches its masks")


def run_passes(gm: fx.GraphModule, passes: Sequence[GraphPass],
               probe: torch.Tensor | None = None) -> PipelineResult:
    """Run ``passes`` on ``gm`` (in place, fx style) and return the result with one record each.

    ``probe``: the batch output-preserving passes are checked on (default: :func:`probe_input`)."""
    result = PipelineResult(gm)
    before = None
    for p in passes:
        t0 = time.perf_counter()
        p.requires(gm)
        tol = p.tolerance_for(gm)          # may depend on the graph (split_branches: K = C)
        if tol is not None and probe is None:
            probe = probe_input(gm)
        check = tol is not None and probe is not None
        if check and before is None:
            before = _outputs(gm, probe)
        res = p.call(gm)
        gm = res.graph_module if res is not None else gm
        modified = bool(res.modified) if res is not None else True
        if modified:
            _recompile(p, gm)
        p.ensures(gm)
        _check_dag(p, gm)
        rec = PassRecord(p.name, modified, 0.0, tolerance=tol)
        if check:
            after = _outputs(gm, probe)
            rec.max_abs_diff, why = p.check_outputs(before, after, tol)
            if why:
                raise McGraphError(p.name, f"refused: the pass {why}")
            before = after
        elif modified:
            before = None                 # outputs may have changed: next check starts afresh
        rec.seconds = time.perf_counter() - t0
        result.records.append(rec)
    result.graph_module = gm
    return result
