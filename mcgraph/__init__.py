"""mcgraph: MaskConnect (Ahmed & Torresani, ECCV 2018) as a graph compiler.

Rewrite a ResNet so every block reads a learnable K-sparse masked sum of earlier blocks, train
weights and connectivity together, compile away the masks and the unread blocks, export ONNX.
"""
from .api import CompileReport, compile, count_params, description, load, rewrite, save
from .errors import McGraphError
from .ir import ModuleDAG
from .masks import MaskConnect, clip_masks_, freeze_masks, mask_parameters
from .models import create_model, list_models, register_model
from .passes import export_onnx
from .passes.freeze import freeze

__version__ = "0.1.0"
__all__ = ["CompileReport", "McGraphError", "MaskConnect", "ModuleDAG", "clip_masks_", "compile",
           "count_params", "create_model", "description", "export_onnx", "freeze", "freeze_masks",
           "list_models", "load", "mask_parameters", "register_model", "rewrite", "save"]
