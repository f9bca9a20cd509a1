"""Run a grid of training runs from a spec, measure each one, and render the results page.

    from mcgraph.experiment import run_experiment
    results = run_experiment("experiments/tables.json", "runs/experiment", seeds=3,
                             render_to="docs/results.md")

    mcgraph experiment experiments/tables.json --seeds 3 --render docs/results.md

Each run (table, config, model, seed) trains into ``<root>/<table>/<config>/<model>-s<seed>/``,
then its checkpoint is compiled, exported to ONNX and timed in onnxruntime (CPU), its
connectivity drawn, and ``result.json`` written last: a run with ``result.json`` is done and
skipped, one with only ``last.pt`` is resumed, so an interrupted grid continues where it stopped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .. import rundir
from ..errors import McGraphError
from ..rundir import (
    locked,
    read_config,
    read_metrics,
    read_result,
    run_state,
    select_best,
    train_seconds,
    write_result,
)
from ..sources import same_source
from ..train.config import TrainConfig
from .spec import WHERE, Run, Spec, check_dir_path, load_spec, resolve_refs, run_dir, runs

Log = Callable[[str], None]


@dataclass(frozen=True)
class PlannedRun:
    run: Run
    state: rundir.State
    refs: dict[str, str]              # field -> referenced config


def plan(spec: Spec, root: str | os.PathLike, *, seeds: int | None = None,
         only: list[str] | None = None, tables: list[str] | None = None) -> list[PlannedRun]:
    """The runs in execution order with their state (done / resume / new)."""
    spec = spec.with_seeds(seeds).with_tables(tables)
    tables = {t.name: t for t in spec.tables}
    return [PlannedRun(r, run_state(r.dir), tables[r.table].config(r.config).refs())
            for r in runs(spec, root, only)]


def train_config(spec: Spec, run: Run, root: str | os.PathLike, progress: bool = True,
                 resume: bool = False) -> TrainConfig:
    """The run's TrainConfig: recipe, then the config's keys, references resolved."""
    table = next(t for t in spec.tables if t.name == run.table)
    opts = resolve_refs(table.options(run.config),
                        lambda other: run_dir(root, run.table, other, run.model, run.seed),
                        run.label)
    return TrainConfig(model=run.model, seed=run.seed, out=str(run.dir), progress=progress,
                       resume=resume, overwrite=not resume, **opts)   # a new run owns its dir


def run_experiment(spec_path: str | os.PathLike, root: str | os.PathLike, *,
                   seeds: int | None = None, only: list[str] | None = None,
                   render_to: str | None = None, progress: bool = True, log: Log = print,
                   latency_repeats: tuple[int, int] = (50, 20),
                   keep_onnx: bool = False,
                   tables: list[str] | None = None) -> list[dict[str, Any]]:
    """Train, measure and record every run of the spec not done yet; returns the results of
    the runs that are done. ``seeds=N`` runs seeds 0..N-1 in every table; ``only`` keeps those
    configs (and the ones they reference); ``tables`` those tables (the page still renders
    all of them). Ctrl-C (:class:`~mcgraph.errors.Interrupted`)
    propagates with the run's state saved; the next call resumes it."""
    from .render import check_page

    check_dir_path(root, "run root")
    if render_to:
        check_page(render_to)              # before the training, not after it
    spec = load_spec(spec_path).with_seeds(seeds)
    results: list[dict[str, Any]] = []
    planned = plan(spec, root, only=only, tables=tables)
    for i, p in enumerate(planned, 1):
        head = f"[{i}/{len(planned)}] {p.run.label}"
        if p.state == "done":
            log(f"{head}: skip (done)")
            results.append(read_result(p.run.dir) or {})
            continue
        waiting = [o for o in p.refs.values()
                   if read_result(run_dir(root, p.run.table, o, p.run.model, p.run.seed)) is None]
        if waiting:   # an earlier run stopped unfinished (max_steps): this one cannot start yet
            log(f"{head}: waiting for {', '.join(waiting)} to finish")
            continue
        # another `mcgraph experiment` on this root may be on the same run (a config that
        # several --only groups reference): wait for it, then take what it left
        note = f"{head}: another process is on it; waiting"
        with locked(p.run.dir, WHERE, on_wait=lambda note=note: log(note)):
            result = _train_and_measure(spec, p, root, head, progress, log,
                                        latency_repeats, keep_onnx)
        if result is not None:
            results.append(result)
    if render_to:
        from .render import render
        log(f"rendered {render(spec, root, render_to)}")
    return results


def _train_and_measure(spec: Spec, p: PlannedRun, root: str | os.PathLike, head: str,
                       progress: bool, log: Log, latency_repeats: tuple[int, int],
                       keep_onnx: bool) -> dict[str, Any] | None:
    """One run, its directory held: trained or resumed, then measured; None if it stopped
    unfinished."""
    from ..train.loop import train

    state = run_state(p.run.dir)
    if state == "done":                       # finished by the process this one waited for
        log(f"{head}: skip (done)")
        return read_result(p.run.dir) or {}
    log(f"{head}: {'resume from last.pt' if state == 'resume' else 'train'}")
    cfg = train_config(spec, p.run, root, progress, resume=state == "resume")
    res = train(cfg)                          # Interrupted propagates: state is in last.pt
    if res.stopped != "done":
        log(f"{head}: stopped ({res.stopped}) after {res.steps} steps; not finished, the next "
            "call resumes it")
        return None
    result = finish_run(p.run, root, latency_repeats=latency_repeats, keep_onnx=keep_onnx,
                        log=log)
    log(f"{head}: test {result['test_acc']:.2f}% (epoch {result['best_epoch']}), "
        f"{result['blocks_kept']}/{result['blocks_total']} blocks, "
        f"b64 {result['latency_ms_b64']:.2f} ms")
    return result


def remeasure_latency(spec_path: str | os.PathLike, root: str | os.PathLike, *,
                      seeds: int | None = None, repeats: tuple[int, int] = (100, 30),
                      log: Log = print, tables: list[str] | None = None) -> int:
    """Time every done run's compiled model again, one after another, and update its
    ``result.json``. Latencies taken right after each run share the CPU with whatever else ran
    then; this pass measures them side by side on a quiet machine. Returns the runs measured."""
    from ..api import load
    from ..checkpoint import read_checkpoint
    from ..measure import compile_export_time

    n = 0
    for p in plan(load_spec(spec_path), root, seeds=seeds, tables=tables):
        result = read_result(p.run.dir)
        if result is None:
            continue
        ck = read_checkpoint(p.run.dir / result["checkpoint"])
        try:
            m = compile_export_time(load(ck, trust_code=_trusted(p.run, ck)),
                                    p.run.dir / "model.onnx",
                                    repeats={1: repeats[0], 64: repeats[1]})
        finally:
            (p.run.dir / "model.onnx").unlink(missing_ok=True)
        result["latency_ms_b1"], result["latency_ms_b64"] = m.latency_ms[1], m.latency_ms[64]
        result["latency_measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_result(p.run.dir, result)
        log(f"{p.run.label}: b1 {result['latency_ms_b1']:.3f} ms, "
            f"b64 {result['latency_ms_b64']:.2f} ms")
        n += 1
    return n


# ------------------------------------------------------------------ one finished run
def finish_run(run: Run, root: str | os.PathLike, *, latency_repeats: tuple[int, int] = (50, 20),
               keep_onnx: bool = False, log: Log = print) -> dict[str, Any]:
    """Compile, export and time the selected epoch's checkpoint, draw the connectivity, and write
    ``result.json`` (last, atomically: its presence means the run is done)."""
    from ..api import count_params, load
    from ..checkpoint import read_checkpoint
    from ..ir import dag_of
    from ..measure import compile_export_time
    from ..plot import plot_connectivity

    d = run.dir
    config = read_config(d, WHERE) or {}
    rows = read_metrics(d)
    best = select_best(rows)
    ckpt_name, ckpt = _checkpoint_of_epoch(d, best["epoch"], log, read_checkpoint)
    masked = load(ckpt, trust_code=_trusted(run, ckpt))
    try:
        m = compile_export_time(masked, d / "model.onnx",
                                repeats={1: latency_repeats[0], 64: latency_repeats[1]})
    finally:
        if not keep_onnx:
            (d / "model.onnx").unlink(missing_ok=True)
    report, b1, b64 = m.report, m.latency_ms[1], m.latency_ms[64]
    plot_connectivity(dag_of(masked), d / "connectivity.png",
                      title=f"{run.label}: test {best['test_acc']:.2f}% (epoch {best['epoch']})")
    connectivity = config.get("connectivity", "learned")
    params_test = report.params_after
    result = {
        "table": run.table, "config": run.config, "model": run.model, "seed": run.seed,
        "run": Path(os.path.relpath(d, root)).as_posix(), "connectivity": connectivity,
        "fan_in": config.get("fan_in"), "data": config.get("data"), "status": "done",
        "checkpoint": ckpt_name, "best_epoch": best["epoch"], "best_val_acc": best.get("val_acc"),
        "test_acc": best["test_acc"], "final_test_acc": rows[-1]["test_acc"],
        # fixed wirings never train the blocks nobody reads: train-time size = test-time size
        "params_train": count_params(masked) if connectivity == "learned" else params_test,
        "params_test": params_test, "blocks_total": report.modules_before,
        "blocks_kept": report.modules_after, "removed": report.removed,
        "latency_ms_b1": b1, "latency_ms_b64": b64, "macs": m.macs,
        "train_seconds": train_seconds(rows),
        "epochs": rows[-1]["epoch"], "machine": machine(config.get("device", "cpu")),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_result(d, result)
    return result


def _checkpoint_of_epoch(d: Path, epoch: int, log: Log, read_checkpoint) -> tuple[str, dict]:
    """best.pt when it holds the selected epoch, else last.pt when that one does (runs without a
    validation split select the last epoch, while best.pt may hold another)."""
    found = {}
    for name in ("best.pt", "last.pt"):
        if (d / name).is_file():
            ckpt = read_checkpoint(d / name)
            held = ckpt.get("train", {}).get("epoch")
            if held == epoch:
                return name, ckpt
            found[name] = (held, ckpt)
    if "best.pt" not in found:
        raise McGraphError(WHERE, f"{d / 'best.pt'} does not exist")
    log(f"warning: no checkpoint of {d} holds the selected epoch {epoch} "
        f"(best.pt holds {found['best.pt'][0]}); measuring best.pt")
    return "best.pt", found["best.pt"][1]


def machine(device: str) -> dict[str, Any]:
    """Where the run trained (``device``) and was timed (this machine)."""
    from ..device import machine_info
    return machine_info(device)


def _trusted(run: Run, ckpt: dict) -> bool:
    """The spec the user wrote names the checkpoint's model source itself, or sets trust_code
    for the run: rebuilding it runs only code the user asked to run (as when ``mcgraph train``
    is given the source again)."""
    said = bool((read_config(run.dir, WHERE) or {}).get("trust_code"))
    return said or same_source(run.model, ckpt["description"].get("model"))
