"""Shared measurement helpers for the benchmark scripts (side-by-side ratios in one run)."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable

import torch


@contextmanager
def saved_activation_bytes(out: list[int]):
    """Bytes of distinct storages autograd saves for backward while the block runs."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except Exception:  # tensors without storage (e.g. sparse) are ignored
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
    out.append(sum(seen.values()))


def time_steps(step: Callable[[], None], warmup: int = 3, repeats: int = 10) -> float:
    """Median seconds of ``step()``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def print_table(rows: list[list], headers: list[str]) -> None:
    def fmt(c) -> str:
        if not isinstance(c, float):
            return str(c)
        return f"{c:,.0f}" if abs(c) >= 100 else f"{c:.3g}"
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
