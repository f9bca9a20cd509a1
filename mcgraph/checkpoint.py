"""Checkpoints: a state_dict plus a plain description; never a pickled module.

    {"format": "mcgraph", "version": 2, "description": {...}, "state_dict": {...}, ...extras}

Version 2 (mcgraph 0.2): an adapter subsamples by the composed stride of the blocks between two
modules (the network's own grid). Version 1 took the smallest stride that fit the sizes; it is
still read, and :func:`mcgraph.load` refuses one whose adapters this version would change.

Loads with ``torch.load(path, weights_only=True)``. Writes go to a temp file in the same
directory, then ``os.replace``: an interrupted write never leaves a half-written checkpoint, and
a failed one (a full disk) is one line naming the file and the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import McGraphError
from .io import atomic_path

FORMAT, VERSION = "mcgraph", 2
READABLE = (1, 2)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path, "save") as tmp:
        with open(tmp, "wb") as f:
            writer = _Writer(f)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                if writer.error is not None:    # a full disk: say so, not "unexpected pos"
                    raise writer.error from None
                raise
    return Path(path)


class _Writer:
    """The file torch.save writes to, keeping the OSError (ENOSPC, EIO) of a failed write:
    torch's writer swallows it and raises a RuntimeError that does not say why."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def write_checkpoint(path: str | os.PathLike, description: dict[str, Any],
                     state_dict: dict[str, torch.Tensor], **extras: Any) -> Path:
    obj = {"format": FORMAT, "version": VERSION, "description": description,
           "state_dict": state_dict, **extras}
    return atomic_save(obj, path)


def read_checkpoint(path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate; every failure is a one-line McGraphError."""
    path = Path(path)
    if not path.is_file():
        raise McGraphError("load", f"{path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise McGraphError("load", f"{path} is not an mcgraph checkpoint (unreadable: "
                                   f"{type(e).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise McGraphError("load", f"{path} is not an mcgraph checkpoint (no mcgraph header)")
    if obj.get("version") not in READABLE:
        raise McGraphError("load", f"{path} has checkpoint version {obj.get('version')}, "
                                   f"this mcgraph reads versions {', '.join(map(str, READABLE))}")
    if not isinstance(obj.get("description"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise McGraphError("load",
                           f"{path} is an mcgraph checkpoint without description or weights")
    return obj
