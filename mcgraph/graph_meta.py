"""What mcgraph keeps on a graph, and the only module that knows where.

A rewritten ``fx.GraphModule`` carries, in ``gm.meta["mcgraph"]``:

* ``rewrite``: how it was made (model source and arguments, ``input_shape`` [C, H, W],
  ``model_kwargs`` with ``num_classes``, K, init, level, ...), what checkpoints describe;
* ``discovery``: the residual blocks structural discovery found (``blocks``, ``verdicts``),
  written by the ``discover_blocks`` pass for ``find_modules``;
* ``dag``: the :class:`~mcgraph.ir.ModuleDAG` every later pass reads and updates;
* ``unreachable``: per block, the earlier outputs no adapter can bring to it, and why.

Everything else reads and writes these through the functions here, so the layout can change
in one place.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from torch import nn

from .errors import McGraphError

if TYPE_CHECKING:
    from .ir import ModuleDAG

KEY = "mcgraph"


def _store(gm: nn.Module, create: bool = False) -> dict[str, Any]:
    meta = getattr(gm, "meta", None)
    if not isinstance(meta, dict):
        if not create:
            return {}
        meta = gm.meta = {}                     # type: ignore[assignment]
    if create:
        return meta.setdefault(KEY, {})
    return meta.get(KEY) or {}


def has_record(gm: nn.Module) -> bool:
    return isinstance(_store(gm).get("rewrite"), dict)


def rewrite_record(gm: nn.Module, where: str = "mcgraph") -> dict[str, Any]:
    """How ``gm`` was rewritten (see the module docstring); an error for a graph mcgraph did
    not rewrite."""
    rec = _store(gm).get("rewrite")
    if not isinstance(rec, dict):
        raise McGraphError(where, f"{type(gm).__name__} was not rewritten by mcgraph (no record)")
    return rec


def set_rewrite_record(gm: nn.Module, record: dict[str, Any]) -> None:
    _store(gm, create=True)["rewrite"] = record


def input_shape(gm: nn.Module, where: str = "mcgraph") -> tuple[int, ...]:
    """One sample's (C, H, W) the model was rewritten for."""
    return tuple(int(s) for s in rewrite_record(gm, where)["input_shape"])


def num_classes(gm: nn.Module) -> int | None:
    """The head's classes as the rewrite recorded them (None when unknown)."""
    n = (rewrite_record(gm).get("model_kwargs") or {}).get("num_classes")
    return int(n) if n is not None else None


def discovery(gm: nn.Module) -> dict[str, Any] | None:
    return _store(gm).get("discovery")


def set_discovery(gm: nn.Module, found: dict[str, Any]) -> None:
    _store(gm, create=True)["discovery"] = found


def dag(gm: nn.Module) -> "ModuleDAG | None":
    return _store(gm).get("dag")


def set_dag(gm: nn.Module, d: "ModuleDAG") -> None:
    _store(gm, create=True)["dag"] = d


def unreachable(gm: nn.Module) -> dict[str, list]:
    return _store(gm).get("unreachable") or {}


def set_unreachable(gm: nn.Module, why: dict[str, list]) -> None:
    _store(gm, create=True)["unreachable"] = why


def copy_to(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst`` (a new graph of the same model, e.g. a lowered view) what ``src`` carries,
    with a DAG of its own: passes on ``dst`` update its DAG, not ``src``'s."""
    store = dict(_store(src))
    if "dag" in store:
        store["dag"] = copy.deepcopy(store["dag"])
    _store(dst, create=True).update(store)
