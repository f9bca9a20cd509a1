"""mcgraph: MaskConnect (Ahmed & Torresani, ECCV 2018) as a graph compiler.

Rewrite a ResNet so every block reads a learnable K-sparse masked sum of earlier blocks, train
weights and connectivity together, compile away the masks and the unread blocks, export ONNX.
"""
from .api import CompileReport, compile, count_params, description, load, rewrite, save
from .constraints import clip_masks_, constrain_masks_
from .errors import Interrupted, McGraphError
from .explain import Explanation, explain
from .export import read_metadata
from .fit import fit, tensor_data
from .ir import ModuleDAG, dag_of
from .jobs import compile_file
from .mask_ops import freeze_masks, mask_parameters, param_groups, set_temperature
from .masks import MaskConnect
from .models import create_model, list_models, register_model
from .passes import export_onnx, run_passes
from .passes.freeze import freeze
from .train.build import training_view
from .train.config import TrainConfig
from .train.data import load_data
from .train.loop import TrainResult
from .train.metrics import recalibrate_bn
from .why import why

__version__ = "0.1.0"
__all__ = ["CompileReport", "Interrupted", "McGraphError", "MaskConnect", "ModuleDAG",
           "clip_masks_", "compile", "constrain_masks_", "count_params", "create_model", "dag_of",
           "description", "Explanation", "explain", "export_onnx",
           "freeze", "freeze_masks", "list_models", "load", "mask_parameters",
           "register_model", "rewrite", "run_passes", "save", "fit", "tensor_data",
           "TrainConfig", "TrainResult", "param_groups", "set_temperature", "recalibrate_bn",
           "read_metadata", "why", "load_data", "training_view", "compile_file"]
