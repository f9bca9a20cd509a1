"""Export: write a plain, checked ONNX file with a dynamic batch axis that carries its contract.

Requires: a model without masks (compile it first: :func:`mcgraph.compile`), in eval mode.
Ensures:  one ``.onnx`` file (weights inside, no external data), opset >= 18, input ``input`` and
          output ``logits`` with a dynamic batch axis ``batch``, and the file passes
          ``onnx.checker.check_model(full_check=True)``. Returns the path. The exporter's console
          output is silenced; a failure raises McGraphError with the exporter's own reason.
          The file's ``metadata_props`` hold ``mcgraph.*`` keys (:data:`KEYS`; strings, JSON for
          structured values): input layout, size and channels, class count, mcgraph's version,
          the rewrite record and the frozen wiring of a model mcgraph rewrote, and with ``data``
          the data set, its normalization and class names (docs/onnx-contract.md).

    export_onnx(slim, "model.onnx", (1, 28, 28), data=checkpoint_data("run/best.pt"))
    read_metadata("model.onnx")["mean"]          # [0.286]
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Mapping

import onnx
import torch
from torch import nn

from . import graph_meta
from .datainfo import NORMALIZATION, DataInfo
from .errors import McGraphError, first_line
from .io import atomic_path, check_out_path
from .ir import HEAD, ModuleDAG, dag_of
from .masks import mask_modules

PASS = "export_onnx"
DEFAULT_OPSET = 18
PREFIX = "mcgraph."
LAYOUT = "NCHW"

# every key mcgraph writes (without PREFIX) and how its string value is typed
KEYS: dict[str, type] = {
    "version": str, "input_layout": str, "input_channels": int, "input_size": list,
    "num_classes": int, "dataset": str, "normalization": str, "mean": list, "std": list,
    "class_names": list, "rewrite": dict, "wiring": dict, "params": int}


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...],
                opset: int = DEFAULT_OPSET, data: DataInfo | Any | None = None,
                params: int | None = None) -> Path:
    """``input_shape`` is one sample's shape (C, H, W); the batch axis is dynamic. ``data``: the
    data set the model was trained on (a :class:`DataInfo`, a DataSpec or the dict of one, as a
    run's config.json holds it), recorded in the file; None records no data set and no
    normalization (:func:`mcgraph.datainfo.checkpoint_data` finds a checkpoint's). ``params``:
    the network's learned parameters (a compile report's ``params_after``), the one count
    ``mcgraph bench`` then shows for the file."""
    path = check_out_path(path, PASS)
    if opset < 18:
        raise McGraphError(PASS, f"opset must be >= 18, got {opset}", "opset")
    if mask_modules(model):
        raise McGraphError(PASS, "the model still has masks; compile it before exporting")
    info = data if data is None or isinstance(data, DataInfo) else DataInfo.from_spec(data)
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
        except Exception as e:
            raise McGraphError(PASS, f"{type(model).__name__} did not export"
                                     f"{_reason(e, log.getvalue())}") from None
        meta = model_metadata(model, input_shape, _output_classes(program), info)
        if params is not None:
            meta["params"] = int(params)
        program.model.metadata_props.update(encode_metadata(meta))
        try:
            with warnings.catch_warnings(), redirect_stdout(log), redirect_stderr(log):
                warnings.simplefilter("ignore")
                program.save(str(tmp), external_data=False)
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise McGraphError(PASS, f"{type(model).__name__} did not export"
                                     f"{_reason(e, log.getvalue())}") from None
    return path


def _output_classes(program: Any) -> int | None:
    """The class axis of the exported ``logits`` (N, classes) when it is a fixed size."""
    shape = program.model.graph.outputs[0].shape
    if shape is None or len(shape) != 2:
        return None
    n = shape[1]
    return n if isinstance(n, int) else None


# ---------------------------------------------------------------- the metadata

def model_metadata(model: nn.Module, input_shape: tuple[int, ...], num_classes: int | None,
                   data: DataInfo | None = None) -> dict[str, Any]:
    """The typed metadata of an export (keys without PREFIX; values as :func:`read_metadata`
    returns them): only what is known, never a guess."""
    from . import __version__
    meta: dict[str, Any] = {"version": __version__}
    if len(input_shape) == 3:
        c, h, w = (int(s) for s in input_shape)
        meta.update(input_layout=LAYOUT, input_channels=c, input_size=[h, w])
    if num_classes is not None:
        meta["num_classes"] = int(num_classes)
    if graph_meta.has_record(model):                # plain modules have none
        # through JSON once, so that the value equals what read_metadata returns (lists)
        meta["rewrite"] = json.loads(json.dumps(graph_meta.rewrite_record(model), default=str))
    wired = wiring(model)
    if wired is not None:
        meta["wiring"] = wired
    if data is not None:
        meta.update(_data_metadata(data, input_shape, num_classes))
    return meta


def _data_metadata(data: DataInfo, input_shape: tuple[int, ...],
                   num_classes: int | None) -> dict[str, Any]:
    """The data keys; a data set that does not fit the model is refused (its normalization and
    class names would describe another model)."""
    if num_classes is not None and data.num_classes is not None and data.num_classes != num_classes:
        raise McGraphError(PASS, f"the model has {num_classes} classes, data set {data.name} has "
                                 f"{data.num_classes}")
    if data.in_channels is not None and data.input_size is not None and \
            [data.in_channels, *data.input_size] != [int(s) for s in input_shape]:
        raise McGraphError(PASS, f"the model expects inputs {list(input_shape)}, data set "
                                 f"{data.name} has {[data.in_channels, *data.input_size]}")
    out: dict[str, Any] = {"dataset": data.name}
    channels = int(input_shape[0]) if input_shape else None
    if data.mean is not None and data.std is not None and \
            len(data.mean) == len(data.std) and len(data.mean) in (1, channels):
        out.update(normalization=NORMALIZATION, mean=[float(v) for v in data.mean],
                   std=[float(v) for v in data.std])
    classes = num_classes if num_classes is not None else data.num_classes
    if data.class_names is not None and (classes is None or len(data.class_names) == classes):
        out["class_names"] = [str(n) for n in data.class_names]
    return out


def wiring(model: nn.Module) -> dict[str, Any] | None:
    """The frozen wiring of a model mcgraph rewrote and compiled: for each module kept, the
    inputs it reads (``reads``, the head's included), and the modules removed as dead; None for
    a model without a module DAG or with an undecided edge."""
    if not isinstance(graph_meta.dag(model), ModuleDAG):
        return None
    try:
        dag = dag_of(model)
        dead = set(dag.dead_modules())
        reads = {b: dag.chosen_inputs(b) for b in dag.blocks() if b not in dead}
        reads[HEAD] = dag.chosen_inputs(HEAD)
    except McGraphError:     # an edge no mask decides and nothing recorded
        return None
    return {"level": dag.level, "reads": reads, "removed": [b for b in dag.blocks() if b in dead]}


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """Typed metadata -> ONNX ``metadata_props`` (string pairs, keys with PREFIX)."""
    out = {}
    for key, value in meta.items():
        kind = KEYS.get(key)
        if kind is None or not isinstance(value, kind):
            raise McGraphError(PASS, f"metadata {key!r}: expected one of mcgraph's keys with a "
                                     f"{kind.__name__ if kind else 'known'} value, got {value!r}")
        out[PREFIX + key] = value if kind is str else str(value) if kind is int else json.dumps(
            value, separators=(",", ":"))
    return out


def decode_metadata(props: Mapping[str, str], where: str = "the ONNX file") -> dict[str, Any]:
    """ONNX ``metadata_props`` (``sess.get_modelmeta().custom_metadata_map``) -> the typed
    ``mcgraph.*`` entries, keys without PREFIX. Other tools' keys are left out; a key this
    version does not know stays a string."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        kind = KEYS.get(name, str)
        try:
            v = value if kind is str else int(value) if kind is int else json.loads(value)
        except ValueError:
            v = None
        if kind is not str and not isinstance(v, kind):
            raise McGraphError("read_metadata", f"{where}: {key} is not a valid {kind.__name__}: "
                                                f"{value[:60]!r}")
        out[name] = v
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``mcgraph.*`` metadata of an ONNX file, typed (see :data:`KEYS`); {} for a file
    mcgraph did not write."""
    path = Path(path)
    if not path.is_file():
        raise McGraphError("read_metadata", f"{path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:      # protobuf raises its own types
        raise McGraphError("read_metadata", f"{path} is not an ONNX file ({first_line(e)})") \
            from None
    return decode_metadata({p.key: p.value for p in model.metadata_props}, str(path))


# ---------------------------------------------------------------- the exporter's reason

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
