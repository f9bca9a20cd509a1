"""ONNX Runtime: sessions (CUDA provider when present, else CPU), inference, latency, op counts.

    sess = make_session("model.onnx")                  # CUDA EP if available, else CPU
    logits = run(sess, images)                          # numpy (N, classes)
    latency_ms(sess, (1, 1, 28, 28))                    # median over repeats
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .errors import McGraphError
from .onnx_stats import initializer_params, onnx_macs, op_counts  # noqa: F401  (re-exported)


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


def make_session(path: str | os.PathLike, device: str = "auto", threads: int = 0,
                 spin: bool = True) -> ort.InferenceSession:
    """An onnxruntime session (all graph optimizations). ``threads``: intra-op threads (0: one
    per core). ``spin=False`` stops idle threads from busy-waiting for the next run, which
    matters when several sessions share the cores (side-by-side benchmarks)."""
    path = Path(path)
    if not path.is_file():
        raise McGraphError("deploy", f"{path} does not exist")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = providers(device)
    if chosen[0] == "CUDAExecutionProvider":
        _preload_cuda()
    try:
        return ort.InferenceSession(str(path), opts, providers=chosen)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise McGraphError("deploy",
                           f"{path} is not a runnable ONNX model: {first[:200]}") from None


def _preload_cuda() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia pip packages (what PyTorch's CUDA wheels
    install) before the CUDA provider looks for them; onnxruntime >= 1.21 knows where."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:      # noqa: BLE001 - the provider then searches the usual paths
            pass


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


def runner(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], None]:
    """One batch, ready to run again and again, as a deployment would: on the CUDA provider
    the input is copied to the device once and bound (IOBinding) and the output stays there,
    so a timed run measures the model, not the host-device copies."""
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        feeds = {name: x}
        return lambda: sess.run(None, feeds)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    binding.bind_output(sess.get_outputs()[0].name, "cuda")

    def go() -> None:
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return go


def latency_ms(sess: ort.InferenceSession, shape: tuple[int, ...], repeats: int = 30,
               warmup: int = 5) -> float:
    """Median wall time of one batch, in milliseconds (device-resident input and output on the
    CUDA provider: :func:`runner`)."""
    go = runner(sess, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    for _ in range(warmup):
        go()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        go()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def opset(path: str | os.PathLike) -> int:
    model = onnx.load(str(path))
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
