"""Device selection: CUDA when present, CPU otherwise; asking for CUDA without one is an error."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import McGraphError

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(name: str, where: str = "device") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise McGraphError(where, f"unknown device '{name}', expected auto, cpu or cuda", "device")
    if name == "cuda" and not torch.cuda.is_available():
        raise McGraphError(where, "device 'cuda' asked for, but no CUDA device is available",
                           "device")
    return torch.device(name)


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one: machines of one
    architecture differ 2x and more in speed, and a seed's result by about a point."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a run's figures depend on: CPU model and count, the GPU when on CUDA, versions."""
    import onnxruntime
    out = {"platform": platform.platform(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "device": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out
