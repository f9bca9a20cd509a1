"""Export pass: write a plain, checked ONNX file with a dynamic batch axis.

Requires: a model without masks (compile it first: :func:`mcgraph.compile`), in eval mode.
Ensures:  one ``.onnx`` file (weights inside, no external data), opset >= 18, input ``input`` and
          output ``logits`` with a dynamic batch axis ``batch``, and the file passes
          ``onnx.checker.check_model(full_check=True)``. Returns the path. The exporter's console
          output is silenced; a failure raises McGraphError with the exporter's own reason.

    export_onnx(slim, "model.onnx", (1, 28, 28))
"""
from __future__ import annotations

import io
import os
import re
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
            raise McGraphError(PASS, f"{type(model).__name__} did not export"
                                     f"{_reason(e, log.getvalue())}") from None
    return path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAGES = {"1": "torch.export", "2": "decomposition", "3": "conversion to ONNX"}
_GENERIC = re.compile(r"^Failed to (export|convert|decompose|translate|run)\b")   # the wrappers
_LOG_ERROR = re.compile(r"^\s*[\w.]*(Error|Exception)\b\s*:\s*\S")


def _reason(e: BaseException, log: str) -> str:
    """': reason' (with the exporter's stage when it names one): the first line of the
    innermost exception in ``e``'s chain that says more than torch.onnx's generic "Failed to
    export the model ... step 1/3", else the first error line the exporter wrote to the (captured)
    console, else ``e`` itself."""
    chain: list[BaseException] = []
    ex: BaseException | None = e
    while ex is not None and all(ex is not c for c in chain):
        chain.append(ex)
        ex = ex.__cause__ or ex.__context__
    texts = [_ANSI.sub("", str(c)) for c in chain]
    step = next((m.group(1) for t in texts for m in [re.search(r"step (\d)/3", t)] if m), None)
    stage = f" ({_STAGES.get(step, 'step ' + str(step))})" if step else ""
    for c, t in reversed(list(zip(chain, texts))):
        line = next((s.strip() for s in t.splitlines() if s.strip()), "")
        if line and not _GENERIC.match(line):
            return f"{stage}: {type(c).__name__}: {line[:300]}"
    clean = [_ANSI.sub("", s).strip() for s in log.splitlines()]
    line = next((s for s in clean if _LOG_ERROR.match(s)), None) or next(
        (s for s in clean if re.search(r"(?i)\berror\b", s)), None)
    if line:
        return f"{stage}: {line[:300]}"
    return f"{stage}: {type(e).__name__}: {first_line(e, 300)}"
