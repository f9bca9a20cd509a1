"""The pipelines, declared once: lists of passes the driver (:func:`run_passes`) runs.

    run_passes(gm, analysis(modules, level))          # what rewrite and explain run first
    run_passes(gm, masks(level, fan_in=1, init="uniform"))
    run_passes(gm, compile_passes(level) + optimize(level))

Rewrite = analysis, then masks; compile = freeze and remove what no mask reads, then the
inference rewrites; the trainer's lowered view after the freeze = :func:`lower`.
"""
from __future__ import annotations

from typing import Iterable

from .base import GraphPass
from .collapse_streams import CollapseStreams
from .conv_adapters import ConvAdapters
from .discover_blocks import DiscoverBlocks
from .eliminate_dead import EliminateDead
from .find_modules import FindModules
from .freeze import Freeze
from .fuse_branches import FuseBranches
from .insert_masks import InsertMasks
from .lower_masks import LowerMasks
from .prune_branches import PruneBranches
from .split_branches import SplitBranches


def analysis(modules: Iterable[type | str] | None = None, level: str = "auto") -> list[GraphPass]:
    """Find the blocks (by structure unless ``modules`` names them) and their DAG."""
    mods = None if modules is None else list(modules)
    return ([DiscoverBlocks()] if mods is None else []) + [FindModules(mods, level)]


def masks(level: str, *, fan_in: int, init: str, seed: int = 0, mask_grad: str = "normalized",
          aggregate: str = "mean") -> list[GraphPass]:
    """Insert the masks: between blocks (module level) or between branches (branch level)."""
    if level == "branch":
        return [SplitBranches(fan_in, init, seed, mask_grad)]
    return [InsertMasks(fan_in, init, seed, mask_grad, aggregate)]


def lower() -> list[GraphPass]:
    """Frozen masks to plain adds, unread blocks removed (module level; the trainer's view)."""
    return [LowerMasks(), EliminateDead()]


def compile_passes(level: str, full: bool = False) -> list[GraphPass]:
    """Freeze, then remove what no mask reads; a branch-level model whose every row reads all C
    branches (``full``) becomes the original network on one stream."""
    if level == "branch":
        return [Freeze(), CollapseStreams()] if full else [Freeze(), PruneBranches()]
    return [Freeze(), *lower()]


def optimize(level: str, full: bool = False) -> list[GraphPass]:
    """What makes a compiled model as fast as its MACs (docs/design.md §8): shared adapters
    and the mean's scale as 1x1 convolutions (module level), streams as channels with the
    BatchNorms folded (branch level; nothing to do on one stream)."""
    if level == "branch":
        return [] if full else [FuseBranches()]
    return [ConvAdapters()]
