"""Device selection: CUDA when present, CPU otherwise; asking for CUDA without one is an error."""
from __future__ import annotations

from typing import Literal

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
        raise McGraphError(where, "device 'cuda' asked for, but no CUDA device is available", "device")
    return torch.device(name)
