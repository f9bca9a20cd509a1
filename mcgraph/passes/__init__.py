"""Graph passes, one per file. Analysis passes annotate ``node.meta``; rewrite passes return a
linted, recompiled GraphModule."""
from .eliminate_dead import eliminate_dead
from .export_onnx import export_onnx
from .find_modules import find_modules
from .freeze import freeze
from .insert_masks import insert_masks
from .lower_masks import lower_masks
from .prune_branches import prune_branches
from .split_branches import split_branches

__all__ = ["eliminate_dead", "export_onnx", "find_modules", "freeze", "insert_masks", "lower_masks",
           "prune_branches", "split_branches"]
