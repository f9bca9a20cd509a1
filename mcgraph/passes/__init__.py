"""Graph passes, one per file, all of one shape: ``(gm) -> PassResult(gm, modified)``.

:func:`run_passes` runs a pipeline of them (lint, recompile, requires/ensures, DAG and output
checks); the lowercase functions run one pass through it.
"""
from .base import EXACT, GraphPass, PassResult
from .conv_adapters import ConvAdapters, conv_adapters
from .discover_blocks import DiscoverBlocks
from .driver import PassRecord, PipelineResult, probe_input, run_passes
from .eliminate_dead import EliminateDead, eliminate_dead
from .export_onnx import export_onnx
from .find_modules import FindModules, find_modules
from .freeze import Freeze, freeze
from .fuse_branches import FuseBranches, fuse_branches
from .insert_masks import InsertMasks, insert_masks
from .lower_masks import LowerMasks, lower_masks
from .prune_branches import PruneBranches, prune_branches
from .split_branches import SplitBranches, split_branches

__all__ = ["EXACT", "ConvAdapters", "conv_adapters", "DiscoverBlocks", "EliminateDead",
           "FindModules", "Freeze", "FuseBranches", "GraphPass", "InsertMasks",
           "LowerMasks", "PassRecord", "PassResult", "PipelineResult", "PruneBranches",
           "SplitBranches", "eliminate_dead", "export_onnx", "find_modules", "freeze",
           "fuse_branches", "insert_masks", "lower_masks", "probe_input", "prune_branches",
           "run_passes", "split_branches"]
