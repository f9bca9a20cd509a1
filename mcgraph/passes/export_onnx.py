"""Export pass: write a plain, checked ONNX file with a dynamic batch axis.

Requires: a model without masks (compile it first: :func:`mcgraph.compile`), in eval mode.
Ensures:  one ``.onnx`` file (weights inside, no external data), opset >= 18, input ``input`` and
          output ``logits`` with a dynamic batch axis ``batch``, and the file passes
          ``onnx.checker.check_model(full_check=True)``. Returns the path.

    export_onnx(slim, "model.onnx", (1, 28, 28))
"""
from __future__ import annotations

import io
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import onnx
import torch
from torch import nn

from ..errors import McGraphError, first_line
from ..io import atomic_path, check_out_path
from ..masks import mask_modules

PASS = "export_onnx"
DEFAULT_OPSET = 18


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
                opset: int = DEFAULT_OPSET) -> Path:
    """``input_shape`` is one sample's shape (C, H, W); the batch axis is dynamic."""
    path = check_out_path(path, PASS)
    if opset < 18:
        raise McGraphError(PASS, f"opset must be >= 18, got {opset}", "opset")
    if mask_modules(model):
        raise McGraphError(PASS, "the model still has masks; compile it before exporting")
    model = model.eval()
    p = next(iter(model.parameters()), None)
    example = (torch.randn(2, *input_shape, device=p.device if p is not None else "cpu"),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    log = io.StringIO()
    with atomic_path(path, PASS) as tmp:
        try:
            with warnings.catch_warnings(), redirect_stdout(log), redirect_stderr(log):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, example, dynamo=True, opset_version=opset,
                                            input_names=["input"], output_names=["logits"],
                                            dynamic_shapes=({0: batch},), optimize=True,
                                            external_data=False, verbose=False)
                program.save(str(tmp), external_data=False)
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise McGraphError(PASS, f"{type(model).__name__} did not export: "
                                     f"{first_line(e, 300)}") from None
    return path
