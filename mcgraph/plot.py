"""A picture of the connectivity: the module DAG with chosen edges, and the masks as a heat map."""
from __future__ import annotations

import os
from pathlib import Path

from .ir import HEAD, ModuleDAG


def plot_connectivity(dag: ModuleDAG, path: str | os.PathLike, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = dag.blocks()
    sources = [n for n, d in dag.graph.nodes(data=True) if d["kind"] == "source"]
    order = sources + blocks + [HEAD]
    fig, (ax, hm) = plt.subplots(1, 2, figsize=(max(10, 0.9 * len(order) + 6), 5.5),
                                 gridspec_kw={"width_ratios": [1.4, 1]})
    _draw_chosen_edges(ax, dag, order)
    im = _draw_mask_heat_map(hm, dag, sources, blocks)
    fig.colorbar(im, ax=hm, fraction=0.046)
    return _save(fig, path, title)


def _draw_chosen_edges(ax, dag: ModuleDAG, order: list[str]) -> None:
    """Modules on a line, chosen edges as arcs (arc height grows with the skip length)."""
    from matplotlib.patches import FancyArrowPatch

    pos = {n: i for i, n in enumerate(order)}
    dead = set(dag.dead_modules())
    for a, b, d in dag.graph.edges(data=True):
        if not d["chosen"]:
            continue
        span = pos[b] - pos[a]
        style = dict(color="0.7" if b in dead else "tab:blue", lw=1.2 if b in dead else 1.8)
        arc = f"arc3,rad={-0.5 if span > 1 else 0.0}"
        ax.add_patch(FancyArrowPatch((pos[a], 0), (pos[b], 0), arrowstyle="-|>", mutation_scale=10,
                                     connectionstyle=arc, **style))
    for n in order:
        kind = dag.graph.nodes[n]["kind"]
        color = ("0.85" if n in dead
                 else {"source": "tab:green", "head": "tab:red"}.get(kind, "tab:blue"))
        ax.scatter([pos[n]], [0], s=260, color=color, zorder=3, edgecolors="k")
        ax.annotate(n, (pos[n], 0), xytext=(0, -18), textcoords="offset points", rotation=60,
                    ha="right", va="top", fontsize=8)
    ax.set_xlim(-0.8, len(order) - 0.2)
    ax.set_ylim(-2.2, max(2.0, 0.28 * len(order)))
    ax.axis("off")
    ax.set_title(f"chosen inputs ({len(dead)} dead modules in grey)")


def _draw_mask_heat_map(hm, dag: ModuleDAG, sources: list[str], blocks: list[str]):
    """Real-valued masks, rows = modules, columns = candidates; chosen entries boxed. Returns
    the image (for the colour bar)."""
    import matplotlib.pyplot as plt
    import numpy as np

    cols = sources + blocks[:-1]
    m = np.full((len(blocks), len(cols)), np.nan)
    for i, b in enumerate(blocks):
        for c in dag.candidates(b):
            m[i, cols.index(c)] = dag.graph.edges[c, b]["mask"]
    im = hm.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, b in enumerate(blocks):
        for c in dag.chosen_inputs(b):
            hm.add_patch(plt.Rectangle((cols.index(c) - 0.5, i - 0.5), 1, 1, fill=False, ec="red",
                                       lw=1.5))
    hm.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    hm.set_yticks(range(len(blocks)), blocks, fontsize=7)
    hm.set_xlabel("candidate input")
    hm.set_ylabel("module")
    hm.set_title("real-valued masks m~ (red: chosen)")
    return im


def plot_why(report, path: str | os.PathLike, title: str = "") -> Path:
    """Two heat maps over the rows :func:`mcgraph.why.why` measured: m~ of each candidate, and
    the validation loss with that candidate swapped in minus the chosen input's (blue: better
    than the choice; the chosen input is boxed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .why import heat_rows

    rows = list(heat_rows(report))
    used = {c for w in report.rows for c in w.candidates}
    cols = [c for c in report.order if c in used] + sorted(used - set(report.order))
    m = np.full((len(rows), len(cols)), np.nan)
    d = np.full((len(rows), len(cols)), np.nan)
    for i, (w, (_, deltas)) in enumerate(zip(report.rows, rows)):
        for c, v in zip(w.candidates, w.m):
            m[i, cols.index(c)] = v
        for c, v in deltas.items():
            d[i, cols.index(c)] = v
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(10, 0.5 * len(cols) + 7), 1 + 0.45 * len(rows)))
    lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
    for ax, mat, kw, t in ((a, m, dict(vmin=0, vmax=1, cmap="viridis"), "m~"),
                           (b, d, dict(vmin=-lim, vmax=lim, cmap="RdBu_r"),
                            "validation loss with it swapped in - chosen input's")):
        im = ax.imshow(mat, aspect="auto", **kw)
        for i, w in enumerate(report.rows):
            ax.add_patch(plt.Rectangle((cols.index(w.chosen) - 0.5, i - 0.5), 1, 1, fill=False,
                                       ec="red", lw=1.5))
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), [r for r, _ in rows], fontsize=7)
        ax.set_title(t, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path, title)


def _save(fig, path: str | os.PathLike, title: str) -> Path:
    """Title, tight layout, write the PNG, free the figure."""
    import matplotlib.pyplot as plt
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
