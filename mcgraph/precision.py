"""Lower-precision copies of an exported fp32 ONNX model, and how they compare with it.

    info = quantize_int8("fp32.onnx", "int8.onnx", load_data("fashion-mnist"))   # static, QDQ
    convert_fp16("fp32.onnx", "fp16.onnx")                # float16 weights, float32 inputs/outputs
    compare_to_fp32("fp16.onnx", "fp32.onnx", "fp16", check_inputs((1, 28, 28)), tolerance=1e-2)
    ev = top1_on_test_split({"fp32": "fp32.onnx", "int8": "int8.onnx"}, data)   # percent

int8 is onnxruntime's static quantization: ``quant_pre_process`` (shape inference and
onnxruntime's basic graph optimizations), then ``quantize_static`` in QDQ format with int8
weights, per-channel scales by default, and MinMax ranges calibrated on a seeded random subset of
the data set's *training* split (:class:`TrainSplitReader`); the test split only measures.
Scheme ``u8s8`` (default): uint8 activations with 7-bit weight range (``reduce_range``). On x86
CPUs without VNNI onnxruntime multiplies u8 x s8 with VPMADDUBSW, whose 16-bit sums saturate
with full-range weights (agreement with fp32 fell to 96.9% of Fashion-MNIST test images);
7-bit weights avoid that. ``s8s8`` (int8 activations, full range) was as accurate but
ran 1.7x *slower* than fp32 on this AVX2 machine, u8s8 1.53x faster (resnet20, batch 64, top-1
81.56% against fp32 81.57%).

fp16 uses onnxruntime's ``convert_float_to_float16(keep_io_types=True)``. onnxruntime's CPU
provider has no float16 Conv: it would insert casts and compute in float32, so on CPU the fp16
file is checked with onnx's reference evaluator (real float16 arithmetic) on a few inputs, and
its test-split top-1 is measured only where onnxruntime runs it natively (CUDA).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from . import deploy
from .accuracy import check_classes, count_correct, percent, predictions
from .config import Precision
from .errors import McGraphError, first_line
from .train.data import Data, load_data, make_loader

PathLike = str | os.PathLike
CALIB_BATCH = 64          # images per calibration batch (MinMax keeps only per-batch ranges)
EVAL_BATCH = 500          # as mcgraph eval


def load_matching_data(name: str, data_dir: str | None, input_shape: tuple[int, ...] | list[int],
                       where: str = "compile") -> Data:
    """Load data set ``name``, refusing one whose images do not fit the model's input."""
    data = load_data(name, data_dir)
    have = [data.spec.in_channels, *data.spec.input_size]
    if list(have) != list(input_shape):
        raise McGraphError(where, f"the model expects inputs {list(input_shape)}, data set "
                                  f"{data.spec.name} has {have}", "data")
    return data


class TrainSplitReader(CalibrationDataReader):
    """Calibration batches: ``images`` images drawn at random (seeded) from ``data``'s training
    split, normalized as in training. The test split is never read."""

    split = "train"

    def __init__(self, data: Data, input_name: str, images: int = 512, seed: int = 0,
                 batch_size: int = CALIB_BATCH) -> None:
        if images < 1:
            raise McGraphError("quantize", f"calibration needs at least 1 image, got {images}",
                               "calib_images")
        loader = make_loader(data, self.split, batch_size, shuffle=True, augment=False, seed=seed)
        self.batches: list[np.ndarray] = []
        taken = 0
        for x, _ in loader:                                  # a seeded permutation of the split
            self.batches.append(x.numpy()[:images - taken])
            taken += len(self.batches[-1])
            if taken >= images:
                break
        self.images, self.input_name, self._next = taken, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's tools print and log advice; keep the CLI's output to its own lines."""
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _input_name(path: PathLike) -> str:
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def quantize_int8(fp32: PathLike, out: PathLike, data: Data, *, images: int = 512, seed: int = 0,
                  per_channel: bool = True, scheme: str = "u8s8") -> dict[str, object]:
    """Write the static int8 (QDQ) quantization of ``fp32`` to ``out``, calibrated on
    ``images`` training images; ``scheme`` u8s8 or s8s8 (see the module docstring). Return what
    was done, for the report."""
    if scheme not in ("u8s8", "s8s8"):
        raise McGraphError("quantize", f"unknown int8 scheme '{scheme}', expected u8s8 or s8s8")
    u8 = scheme == "u8s8"
    reader = TrainSplitReader(data, _input_name(fp32), images, seed)
    with tempfile.TemporaryDirectory(prefix="mcgraph-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            with _quiet():
                quant_pre_process(str(fp32), str(pre))
                quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, reduce_range=u8,
                                activation_type=QuantType.QUInt8 if u8 else QuantType.QInt8,
                                weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:   # onnxruntime raises many types; one line naming the step
            raise McGraphError("quantize", f"{Path(fp32).name} did not quantize: "
                                           f"{first_line(e)}") from None
    return {"format": "QDQ", "scheme": scheme, "activations": "uint8" if u8 else "int8",
            "weights": "int8 (7-bit range)" if u8 else "int8",
            "per_channel": per_channel, "calibration": "MinMax", "calib_split": reader.split,
            "calib_images": reader.images, "calib_seed": seed}


def _topological(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after its inputs' producers (the fp16 converter
    appends the input Casts last; onnxruntime sorts, the checker and reference evaluator don't)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise McGraphError("fp16", f"node {pending[0].name or pending[0].op_type} reads a "
                                       f"value nothing produces")
        for n in ready:
            known.update(n.output)
        ordered += ready
        placed = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in placed]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32: PathLike, out: PathLike) -> None:
    """Write ``fp32`` with float16 weights and computation to ``out``; inputs and outputs stay
    float32 (casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        _topological(model.graph)
        onnx.checker.check_model(model, full_check=True)
    except McGraphError:
        raise
    except Exception as e:
        raise McGraphError("fp16", f"{Path(fp32).name} did not convert: {first_line(e)}") from None
    onnx.save(model, str(out))


def check_inputs(shape: tuple[int, ...] | list[int], batch_sizes: tuple[int, ...] = (1, 4),
                 data: Data | None = None) -> list[np.ndarray]:
    """One batch per size: the first test images of ``data`` (int8 is calibrated for real
    images; random ones tell little), else seeded standard normals as verify_onnx uses."""
    if data is None:
        return [np.random.default_rng(100 + i).standard_normal((b, *shape)).astype(np.float32)
                for i, b in enumerate(batch_sizes)]
    x, _ = next(iter(make_loader(data, "test", sum(batch_sizes), shuffle=False, augment=False)))
    return [a.numpy() for a in x.split(list(batch_sizes))]


def compare_to_fp32(path: PathLike, fp32: PathLike, precision: Precision,
                    inputs: list[np.ndarray], tolerance: float | None = None) -> float:
    """Max |``path`` - ``fp32``| over the ``inputs`` batches; fp32 runs in onnxruntime, fp16 in
    onnx's reference evaluator (float16 arithmetic), int8 in onnxruntime. With ``tolerance``
    (relative to the output scale, at least 1), raise past it."""
    ref_sess = deploy.make_session(fp32, device="cpu")
    if precision == "fp16":
        from onnx.reference import ReferenceEvaluator
        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        name = evaluator.input_names[0]
        run = lambda x: np.asarray(evaluator.run(None, {name: x})[0], np.float32)  # noqa: E731
    else:
        sess = deploy.make_session(path, device="cpu")
        run = lambda x: deploy.run(sess, x)  # noqa: E731
    worst = 0.0
    for x in inputs:
        ref = deploy.run(ref_sess, x)
        diff = float(np.abs(run(x) - ref).max())
        tol = None if tolerance is None else tolerance * max(1.0, float(np.abs(ref).max()))
        if tol is not None and not diff <= tol:          # NaN fails too
            raise McGraphError(precision, f"{Path(path).name} differs from fp32 at batch {len(x)}: "
                                          f"max |diff| {diff:.3g} > tolerance {tol:.3g}")
        worst = max(worst, diff)
    return worst


def runs_natively(precision: Precision) -> bool:
    """Whether onnxruntime here computes ``precision`` as such: fp16 needs the CUDA provider."""
    return precision != "fp16" or deploy.providers("auto")[0] == "CUDAExecutionProvider"


@dataclass
class Top1:
    """Top-1 on the test split per precision, in percent, and the percentage of images where
    each precision's prediction equals fp32's (predictions and counts: :mod:`mcgraph.accuracy`)."""
    images: int
    top1: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def top1_on_test_split(models: dict[str, PathLike], data: Data, images: int | None = None,
                       batch_size: int = EVAL_BATCH) -> Top1:
    """Evaluate each ``{precision: path}`` (fp32 among them) in onnxruntime on the first
    ``images`` test images (None: all). fp16 is skipped, with a note, where onnxruntime would
    not compute in float16. A model whose class count is not the data set's is refused."""
    if "fp32" not in models:
        raise McGraphError("compile", "top-1 needs the fp32 model as the reference")
    loader = make_loader(data, "test", batch_size, shuffle=False, augment=False, max_samples=images)
    ev = Top1(images=loader.num_total)
    sessions = {}
    for p, path in models.items():
        if not runs_natively(p):   # type: ignore[arg-type]
            ev.notes.append(f"{p} top-1 not measured: onnxruntime's CPU provider has no float16 "
                            f"Conv (it would cast and compute in float32)")
            continue
        sessions[p] = deploy.make_session(path, device="auto" if p == "fp16" else "cpu")
    correct = dict.fromkeys(sessions, 0)
    agree = dict.fromkeys(sessions, 0)
    for x, y in loader:
        preds = {}
        for p, sess in sessions.items():
            logits = deploy.run(sess, x)
            check_classes("compile", Path(models[p]).name, logits.shape[1], data.spec.name,
                          data.spec.num_classes)
            correct[p] += count_correct(logits, y)[0]
            preds[p] = predictions(logits)
        for p in sessions:
            agree[p] += int((preds[p] == preds["fp32"]).sum())
    for p in sessions:
        ev.top1[p] = round(percent(correct[p], ev.images), 4)
        if p != "fp32":
            ev.agreement[p] = round(percent(agree[p], ev.images), 4)
    return ev
