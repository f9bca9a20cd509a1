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

from ..errors import McGraphError
from ..masks import MaskConnect

PASS = "export_onnx"
DEFAULT_OPSET = 18


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
                opset: int = DEFAULT_OPSET) -> Path:
    """``input_shape`` is one sample's shape (C, H, W); the batch axis is dynamic."""
    path = Path(path)
    if opset < 18:
        raise McGraphError(PASS, f"opset must be >= 18, got {opset}")
    if not path.parent.is_dir():
        raise McGraphError(PASS, f"output directory {path.parent} does not exist")
    if any(isinstance(m, MaskConnect) for m in model.modules()):
        raise McGraphError(PASS, "the model still has masks; compile it before exporting")
    model = model.eval()
    example = (torch.randn(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    tmp = path.with_name(f".{path.name}.tmp")
    log = io.StringIO()
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
        tmp.unlink(missing_ok=True)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise McGraphError(PASS, f"{type(model).__name__} did not export: {first[:300]}") from None
    os.replace(tmp, path)
    return path
