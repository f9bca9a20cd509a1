"""ONNX Runtime: sessions (CUDA provider when present, else CPU), inference, latency, op counts.

    sess = make_session("model.onnx")                  # CUDA EP if available, else CPU
    logits = run(sess, images)                          # numpy (N, classes)
    latency_ms(sess, (1, 1, 28, 28))                    # median over repeats
"""
from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .errors import McGraphError


def providers(device: str = "auto") -> list[str]:
    """ORT execution providers for ``device`` (auto|cpu|cuda); CUDA falls back to CPU."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise McGraphError("deploy", "device 'cuda' asked for but onnxruntime has no CUDA provider "
                                     "(pip install 'mcgraph[gpu]')")
    return ["CPUExecutionProvider"]


def make_session(path: str | os.PathLike, device: str = "auto", threads: int = 0) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        raise McGraphError("deploy", f"{path} does not exist")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=providers(device))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise McGraphError("deploy", f"{path} is not a runnable ONNX model: {first[:200]}") from None


def run(sess: ort.InferenceSession, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits for a batch. On CUDA, IOBinding keeps the output on the device until it is read."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    name = sess.get_inputs()[0].name
    if sess.get_providers()[0] == "CUDAExecutionProvider":
        binding = sess.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        binding.bind_output(sess.get_outputs()[0].name, "cuda")
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
    return sess.run(None, {name: arr})[0]


def latency_ms(sess: ort.InferenceSession, shape: tuple[int, ...], repeats: int = 30,
               warmup: int = 5) -> float:
    """Median wall time of one batch, in milliseconds."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        run(sess, x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(sess, x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """ONNX operator histogram of the main graph (and its local functions)."""
    model = onnx.load(str(path))
    ops = Counter(n.op_type for n in model.graph.node)
    for f in model.functions:
        ops.update(n.op_type for n in f.node)
    return dict(sorted(ops.items()))


def initializer_params(path: str | os.PathLike) -> int:
    """Number of scalars stored in the ONNX initializers (the exported weights)."""
    model = onnx.load(str(path))
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def opset(path: str | os.PathLike) -> int:
    model = onnx.load(str(path))
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
