"""``resume=True``: the saved run's config and state, and the few settings a resume may change.

A resumed run keeps its saved settings. Of the settings its caller gives anew (``given``: the
CLI's options on the command line), ``lr``, ``mask_lr`` and ``save_every`` replace the saved
ones (announced on stderr, recorded in ``config.json`` and the next metrics row);
``max_steps``, ``device``, ``progress`` and ``trust_code`` are always this call's; any other
that differs from the saved run is refused (it would change what the saved state means).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from ..checkpoint import read_checkpoint
from ..errors import McGraphError
from ..rundir import read_config, write_config
from ..sources import same_source
from .config import TrainConfig

WHERE = "train"
SAFE = ("lr", "mask_lr", "save_every")                  # may change on resume, with a notice
THIS_CALLS = ("out", "resume", "overwrite", "max_steps", "device", "progress", "trust_code",
              "model")
Changes = dict[str, tuple[Any, Any]]                      # field -> (saved, new)


def resume_config(cfg: TrainConfig, given: Iterable[str] = ()
                  ) -> tuple[TrainConfig, dict[str, Any], Changes]:
    """The saved run's config (with this call's out, max_steps, device, progress, and the safe
    settings in ``given``), its last.pt, and what changed.

    Its model is rebuilt from a file or module source only with this call's ``trust_code``, or
    when this call's ``model`` is that very source (the user gave it again); never on the saved
    config's word. From Python (``given`` empty), every field set to a value other than its
    default counts as given, so a new ``lr`` is applied, not silently ignored."""
    if not given:
        from ..config import default
        given = [f for f in TrainConfig.__dataclass_fields__
                 if f not in THIS_CALLS and getattr(cfg, f) != default(TrainConfig, f)]
    last = Path(cfg.out) / "last.pt"
    if not last.is_file():
        raise McGraphError(WHERE, f"nothing to resume: {last} does not exist")
    ckpt = read_checkpoint(last)
    state = ckpt.get("train")
    if not isinstance(state, dict):
        raise McGraphError(WHERE, f"{last} holds no training state")
    if not isinstance(state.get("config"), dict):
        raise McGraphError(WHERE, f"{last} holds no usable training state (its config is not "
                                  "a mapping)")
    known = TrainConfig.__dataclass_fields__
    saved = TrainConfig(**{k: v for k, v in state["config"].items()
                           if k in known and k not in ("resume", "overwrite")})
    changes = changes_on_resume(saved, cfg, given)
    trust = cfg.trust_code or same_source(cfg.model, ckpt["description"].get("model"))
    new = dataclasses.replace(saved, out=cfg.out, resume=True, max_steps=cfg.max_steps,
                              device=cfg.device, progress=cfg.progress, trust_code=trust,
                              **{k: v[1] for k, v in changes.items()})
    return new, ckpt, changes


def changes_on_resume(saved: TrainConfig, cfg: TrainConfig, given: Iterable[str]) -> Changes:
    """The safe settings ``given`` anew that differ from the saved run; an error for others."""
    changes: Changes = {}
    for name in given:
        if name in THIS_CALLS:
            continue
        if name not in TrainConfig.__dataclass_fields__:
            raise McGraphError(WHERE, f"{name} is not a training setting")
        old, new = getattr(saved, name), getattr(cfg, name)
        if old == new:
            continue
        if name not in SAFE:
            raise McGraphError(WHERE, f"{name} {new} differs from the saved run's {old}; a resumed "
                                      "run keeps its settings: only lr, mask_lr, save_every (and "
                                      "max_steps, device) may change",
                               (name, "lr", "mask_lr", "save_every", "max_steps", "device"))
        changes[name] = (old, new)
    return changes


def describe_changes(changes: Changes) -> str:
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())


def record_changes(out: Path, changes: Changes, step: int, epoch: int) -> None:
    """config.json: the new values, and under ``resumed`` where each change happened."""
    try:
        info = read_config(out, WHERE) or {}
    except McGraphError:          # a torn config.json: start it again with what we know
        info = {}
    info.update({k: new for k, (_, new) in changes.items()})
    info.setdefault("resumed", []).append(
        {"step": step, "epoch": epoch, **{k: [old, new] for k, (old, new) in changes.items()}})
    write_config(out, info, WHERE)


def merge_pending(pending: dict[str, Any] | None, changes: Changes, step: int) -> dict[str, Any]:
    """What the next metrics row reports: the first step and old value, the latest new value."""
    row = dict(pending or {"step": step})
    for k, (old, new) in changes.items():
        row[k] = [row[k][0] if k in row else old, new]
    return row


