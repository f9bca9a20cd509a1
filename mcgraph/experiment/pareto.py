"""The Pareto picture of several tables: every finished run as accuracy against cost (MACs and
onnxruntime latency), the mean of each config and model as a larger mark, and the front of the
means (no other mean is both cheaper and more accurate) drawn as a line.

A table names the tables it is drawn with (``"figure_with": ["other"]`` in the spec); the
picture goes beside its section of the results page."""
from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

COSTS = (("macs", "MACs per image (counted from the ONNX graph)"),
         ("latency_ms_b1", "onnxruntime latency, batch 1 (ms)"))


def front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """The (cost, accuracy, label) points no other point beats on both, by cost."""
    best, out = float("-inf"), []
    for c, a, lab in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            out.append((c, a, lab))
            best = a
    return out


def draw(groups: list, path: Path, title: str) -> Path | None:
    """Two panels (MACs, latency); None when no finished run has a MACs count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not any(r.get("macs") for g in groups for r in g.done):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (key, label) in zip(axes, COSTS):
        means = []
        for i, g in enumerate(groups):
            pts = [(r[key], r["test_acc"]) for r in g.done if r.get(key) is not None]
            if not pts:
                continue
            name = f"{g.config} ({g.model})"
            ax.scatter(*zip(*pts), color=f"C{i % 10}", s=14, alpha=0.6)
            m = (fmean(p[0] for p in pts), fmean(p[1] for p in pts))
            ax.scatter(*m, color=f"C{i % 10}", s=70, edgecolors="k", label=name)
            means.append((*m, name))
        f = front(means)
        ax.plot([p[0] for p in f], [p[1] for p in f], "k--", lw=1, label="front of the means")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
