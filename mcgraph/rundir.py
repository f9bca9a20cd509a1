"""A run directory: what ``mcgraph train`` writes, and the one place that reads it.

    rows = read_metrics(d)                 # one dict per finished epoch
    best = select_best(rows)               # the epoch best.pt holds (validation, masks frozen)
    state = run_state(d)                   # "done" (result.json) | "resume" (last.pt) | "new"

Files: ``config.json`` (the run's settings and what it ran on), ``metrics.jsonl`` (one JSON
line per epoch), ``last.pt`` and ``best.pt`` (checkpoints), and, once an experiment measured
the run, ``result.json``. Every write is atomic (:mod:`mcgraph.io`). One process at a time
works in a run directory: it holds ``.lock`` (:func:`locked`) while it trains or measures there.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .errors import McGraphError, first_line
from .io import append_text, write_text_atomic

CONFIG, METRICS, RESULT = "config.json", "metrics.jsonl", "result.json"
LAST, BEST = "last.pt", "best.pt"
RUN_FILES = (CONFIG, METRICS, LAST, BEST)       # what a training run writes
State = Literal["done", "resume", "new"]
PathLike = str | os.PathLike
LOCK = ".lock"
_HELD: set[str] = set()        # run directories this process holds (locking is re-entrant)


def _json(p: Path, where: str) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise McGraphError(where, f"{p} is not readable JSON: {first_line(e)}") from None


def read_config(d: PathLike, where: str = "run") -> dict[str, Any] | None:
    """The run's config.json; None when there is none."""
    p = Path(d) / CONFIG
    if not p.is_file():
        return None
    info = _json(p, where)
    if not isinstance(info, dict):
        raise McGraphError(where, f"{p} is not a JSON object")
    return info


def write_config(d: PathLike, info: dict[str, Any], where: str = "train") -> None:
    write_text_atomic(Path(d) / CONFIG, json.dumps(info, indent=2) + "\n", where)


def read_result(d: PathLike, where: str = "experiment") -> dict[str, Any] | None:
    """The run's result.json (an experiment's measurement of it); None when not done."""
    p = Path(d) / RESULT
    return _json(p, where) if p.is_file() else None


def write_result(d: PathLike, result: dict[str, Any], where: str = "experiment") -> None:
    """Written last: its presence means the run is done."""
    write_text_atomic(Path(d) / RESULT, json.dumps(result, indent=2) + "\n", where)


def read_metrics(d: PathLike, where: str = "run") -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (one per epoch); [] when absent."""
    p = Path(d) / METRICS
    if not p.is_file():
        return []
    try:
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise McGraphError(where, f"{p} is not JSON lines: {first_line(e)}") from None


def start_metrics(d: PathLike, where: str = "train") -> None:
    write_text_atomic(Path(d) / METRICS, "", where)


def append_metrics(d: PathLike, row: dict[str, Any], where: str = "train") -> None:
    append_text(Path(d) / METRICS, json.dumps(row) + "\n", where)


def trim_metrics(d: PathLike, epochs_done: int, where: str = "train") -> None:
    """Drop rows of epochs the checkpoint does not hold (a run killed after logging an epoch's
    row but before its last.pt) and a torn last line, so that the resumed run logs each once."""
    p = Path(d) / METRICS
    if not p.is_file():
        return
    text = p.read_text()
    keep = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if isinstance(epoch, int) and epoch <= epochs_done:
            keep.append(line + "\n")
    if "".join(keep) != text:
        write_text_atomic(p, "".join(keep), where)


def run_state(d: PathLike) -> State:
    if (Path(d) / RESULT).is_file():
        return "done"
    return "resume" if (Path(d) / LAST).is_file() else "new"


def select_best(rows: list[dict[str, Any]], where: str = "experiment") -> dict[str, Any]:
    """The row of the epoch best.pt holds, as the trainer chooses it: among epochs that ended
    with the masks frozen (a checkpoint ready to compile), the first maximum of val_acc; without
    val_acc, the last such epoch. Never the test accuracy: selecting on test would report a
    number chosen on it."""
    if not rows:
        raise McGraphError(where, "no epochs recorded (metrics.jsonl is empty)")
    rows = [r for r in rows if r.get("masks_frozen", True)] or rows[-1:]
    with_val = [r for r in rows if r.get("val_acc") is not None]
    if not with_val:
        return rows[-1]
    return max(with_val, key=lambda r: r["val_acc"])    # max keeps the first of equal values


def train_seconds(rows: list[dict[str, Any]]) -> float:
    return float(sum(r.get("seconds", 0.0) for r in rows))


def check_new_run(out: Path, resume: bool, overwrite: bool, main: bool,
                  where: str = "train") -> None:
    """A new run never mixes with an old one: an out directory holding run files is refused
    unless the run resumes it or is told to overwrite it (then the old files go first, so no
    stale best.pt outlives its run)."""
    if resume or not out.is_dir():
        return
    old = [n for n in RUN_FILES if (out / n).exists()]
    if not old:
        return
    if not overwrite:
        raise McGraphError(where, f"out {out} already holds a run ({', '.join(old)}); continue it "
                                  "with resume=True, or start over with overwrite=True",
                           ("resume", "overwrite", "out"))
    if main:
        for n in old:
            (out / n).unlink()


@contextmanager
def locked(d: PathLike, where: str = "train",
           on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold run directory ``d`` (created if needed) for this process. Another process holding
    it is refused in one line, or, given ``on_wait``, waited for (``on_wait`` is told first).
    Two processes training one run would both append to its metrics and race on last.pt."""
    key = str(Path(d).resolve())
    if key in _HELD:
        yield
        return
    try:
        import fcntl
    except ImportError:            # no advisory locks here (Windows): one process is trusted
        yield
        return
    try:
        Path(d).mkdir(parents=True, exist_ok=True)
        lock = Path(d) / LOCK      # read-only if it exists: a lock works on a read-only disk
        f = open(lock) if lock.is_file() else open(lock, "a")  # (whose writes fail later, named)
    except OSError as e:
        raise McGraphError(where, f"out {d}: cannot create the directory or its {LOCK} "
                                  f"({e.strerror or e})", "out") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is None:
                raise McGraphError(where, f"another process is working in {d} (it holds "
                                          f"{LOCK}); wait for it, or use another out "
                                          "directory", "out") from None
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
