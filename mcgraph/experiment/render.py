"""The results page of an experiment, from the run files only (never checkpoints).

    render(spec, "runs/experiment", "docs/results.md")    # also writes docs/results/*.png and
                                                           # copies the run files to
                                                           # docs/results/runs/

The copied folder has the run root's layout, so the page re-renders from it alone:
``render(spec, "docs/results/runs", "docs/results.md")``. Runs not done show as missing.
"""
from __future__ import annotations

import os
import re
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import default
from ..demo import DEMO_TABLE, write_baseline
from ..errors import McGraphError
from ..io import atomic_path, write_text_atomic
from ..rundir import CONFIG, METRICS, RESULT, read_metrics, read_result
from ..train.config import TrainConfig
from .spec import WHERE, Spec, TableSpec, check_dir_path, run_dir, run_name

SMALL_FILES = (CONFIG, METRICS, RESULT)
DASH = "—"


@dataclass
class RunData:
    config: str
    model: str
    seed: int
    dir: Path
    result: dict[str, Any] | None          # None: not done
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Group:
    """One row of a table: a config (and model), its runs over seeds."""
    config: str
    model: str
    runs: list[RunData]

    @property
    def done(self) -> list[dict[str, Any]]:
        return [r.result for r in self.runs if r.result is not None]

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.done if r.get(key) is not None]

    def by_seed(self) -> dict[int, float]:
        return {r.seed: float(r.result["test_acc"]) for r in self.runs if r.result is not None}


def render(spec: Spec, root: str | os.PathLike, path_md: str | os.PathLike, *,
           seeds: int | None = None) -> Path:
    """Write the markdown page ``path_md`` and its folder ``<stem>/`` (PNGs, copied run files)."""
    spec = spec.with_seeds(seeds)
    path_md = check_page(path_md)
    assets = path_md.parent / path_md.stem
    (assets / "runs").mkdir(parents=True, exist_ok=True)
    copy_runs = (assets / "runs").resolve() != Path(root).resolve()
    lines = ["# Results", "",
             "Rendered by `mcgraph experiment` from the run files (`result.json`, "
             f"`metrics.jsonl`, `config.json`), copied to [{assets.name}/runs/]"
             f"({assets.name}/runs/). Test accuracy is "
             "that of the epoch selected on validation accuracy (the last epoch when a run has no "
             "validation split); latency is onnxruntime on CPU, median per batch.", ""]
    all_runs: list[RunData] = []
    by_table: dict[str, list[Group]] = {}
    for t in spec.tables:
        groups = by_table[t.name] = collect(t, root)
        for g in groups:
            all_runs.extend(g.runs)
            if copy_runs:
                for r in g.runs:
                    _copy_small(r.dir, run_dir(assets / "runs", t.name, r.config, r.model, r.seed))
        lines += table_section(t, groups, assets, len(t.models) > 1)
        lines += _pareto_picture(t, groups, by_table, spec, root, assets)
        if t.name == DEMO_TABLE:
            write_baseline(t.name, t.title, groups)
    lines += budget_section(spec, all_runs)
    write_text_atomic(path_md, "\n".join(lines).rstrip() + "\n", WHERE)
    return path_md


def _pareto_picture(t: TableSpec, groups: list[Group], by_table: dict[str, list[Group]],
                    spec: Spec, root: str | os.PathLike, assets: Path) -> list[str]:
    """The table drawn with the ones it names (``figure_with``): every run and the front."""
    if not t.figure_with:
        return []
    from .pareto import draw
    names = {x.name: x for x in spec.tables}
    unknown = [n for n in t.figure_with if n not in names]
    if unknown:
        raise McGraphError(WHERE, f"table {t.name}: figure_with names no table: {unknown}")
    others = [g for n in t.figure_with for g in by_table.get(n) or collect(names[n], root)]
    path = draw(others + groups, assets / f"{t.name}_pareto.png", t.title)
    return [f"![{t.name} pareto]({assets.name}/{path.name})", ""] if path else []


def check_page(path_md: str | os.PathLike) -> Path:
    """The page's path, or a one-line error when it or its folder of pictures cannot be written."""
    p = check_dir_path(path_md, "results page", is_dir=False)
    check_dir_path(p.parent / p.stem, "the results page's folder")
    return p


def collect(t: TableSpec, root: str | os.PathLike) -> list[Group]:
    """The table's runs: the spec's seeds plus any other seed found on disk."""
    groups = []
    for c in t.configs:
        for m in t.models:
            base = Path(root) / t.name / c.name
            pat = re.compile(re.escape(run_name(m, 0)[:-1]) + r"(\d+)$")
            found = {int(x.group(1)) for p in (base.iterdir() if base.is_dir() else [])
                     if (x := pat.match(p.name)) and p.is_dir()}
            runs = []
            for s in sorted(set(t.seeds) | found):
                d = run_dir(root, t.name, c.name, m, s)
                runs.append(RunData(c.name, m, s, d, read_result(d), read_metrics(d)))
            groups.append(Group(c.name, m, runs))
    return groups


# ------------------------------------------------------------------ numbers
def mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def std(xs: list[float]) -> float | None:
    """Sample standard deviation; None below two seeds."""
    return statistics.stdev(xs) if len(xs) >= 2 else None


def fmt(v: float | None, digits: int = 2, sign: bool = False) -> str:
    return DASH if v is None else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_int(v: float | None) -> str:
    return DASH if v is None else f"{round(v):,}"


def compare(a: Group, b: Group) -> dict[str, Any] | None:
    """A − B on mean test accuracy, the seed spread it is judged against, and a verdict."""
    xa, xb = a.values("test_acc"), b.values("test_acc")
    if not xa or not xb:
        return None
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    if min(len(xa), len(xb)) >= 3:
        spread, how = max(std(xa), std(xb)), "larger sample std"
    else:          # 1-2 seeds: a std means little; the range is what was seen
        spread, how = max(max(xa) - min(xa), max(xb) - min(xb)), "larger range over seeds"
        if max(len(xa), len(xb)) == 1:
            how += ", 1 seed each: no spread measured"
    verdict = (f"{a.config} better" if diff > spread else f"{b.config} better" if diff < -spread
               else "within seed spread")
    sa, sb = a.by_seed(), b.by_seed()
    paired = {s: sa[s] - sb[s] for s in sorted(sa)} if sa and sa.keys() == sb.keys() else None
    return {"diff": diff, "spread": spread, "spread_kind": how, "verdict": verdict,
            "paired": paired, "n": (len(xa), len(xb))}


def best_run(g: Group) -> RunData | None:
    """Highest validation accuracy, ties by lowest seed (never chosen on test)."""
    done = [r for r in g.runs if r.result is not None]
    if not done:
        return None
    val = lambda r: r.result.get("best_val_acc") if r.result.get("best_val_acc") is not None \
        else float("-inf")  # noqa: E731
    return max(sorted(done, key=lambda r: r.seed), key=val)


# ------------------------------------------------------------------ sections
HEADERS = ["config", "connectivity", "K", "seeds done", "test acc, best seed",
           "test acc, mean ± std", "val acc, mean", "params, train", "params, test",
           "blocks kept", "ORT b1 ms", "ORT b64 ms"]


def table_section(t: TableSpec, groups: list[Group], assets: Path, multi_model: bool) -> list[str]:
    heads = (["model"] if multi_model else []) + HEADERS
    out = [f"## {t.title or t.name}", "", "| " + " | ".join(heads) + " |",
           "|" + "|".join("---" for _ in heads) + "|"]
    for g in groups:
        opts = {**{k: default(TrainConfig, k) for k in ("connectivity", "fan_in")},
                **t.options(g.config)}
        acc = g.values("test_acc")
        total = {r["blocks_total"] for r in g.done}
        kept = mean(g.values("blocks_kept"))
        cells = [g.config, str(opts["connectivity"]), str(opts["fan_in"]),
                 f"{len(g.done)}/{len(g.runs)}", fmt(max(acc) if acc else None),
                 DASH if not acc else f"{fmt(mean(acc))} ± {fmt(std(acc))}",
                 fmt(mean(g.values("best_val_acc"))), fmt_int(mean(g.values("params_train"))),
                 fmt_int(mean(g.values("params_test"))),
                 DASH if kept is None else f"{kept:.1f}/{'/'.join(map(str, sorted(total)))}",
                 fmt(mean(g.values("latency_ms_b1")), 3), fmt(mean(g.values("latency_ms_b64")))]
        out.append("| " + " | ".join(([g.model] if multi_model else []) + cells) + " |")
    out.append("")
    if t.notes:
        out += [t.notes, ""]
    out += _comparisons(t, groups, multi_model)
    out += _pictures(t, groups, assets, multi_model)
    out += _per_run(t, groups, assets)
    return out


def _comparisons(t: TableSpec, groups: list[Group], multi_model: bool) -> list[str]:
    if not t.compare:
        return []
    out = ["Comparisons (mean test accuracy, A − B, in points):", ""]
    for m in t.models:
        find = {g.config: g for g in groups if g.model == m}
        for a, b in t.compare:
            c = compare(find[a], find[b])
            head = f"- {a} − {b}" + (f" ({m})" if multi_model else "")
            if c is None:
                out.append(f"{head}: {DASH} (runs missing)")
                continue
            line = (f"{head}: {fmt(c['diff'], sign=True)}; seed spread {fmt(c['spread'])} "
                    f"({c['spread_kind']}; {c['n'][0]} vs {c['n'][1]} seeds) → **{c['verdict']}**")
            if c["paired"]:
                ahead = sum(v > 0 for v in c["paired"].values())
                line += ("; paired per seed: "
                         + ", ".join(f"s{s} {v:+.2f}" for s, v in c["paired"].items())
                         + f" ({a} ahead on {ahead}/{len(c['paired'])})")
            out.append(line)
    return out + [""]


def _pictures(t: TableSpec, groups: list[Group], assets: Path, multi_model: bool) -> list[str]:
    done = [r for g in groups for r in g.runs if r.result is not None]
    out = []
    if done:
        for kind, title in (("curves", "test accuracy per epoch (dashed: validation)"),
                            ("acc_vs_params", "test accuracy vs parameters (test time)"),
                            ("acc_vs_latency", "test accuracy vs onnxruntime latency, batch 64")):
            name = f"{t.name}_{kind}.png"
            PLOTS[kind](groups, assets / name, f"{t.title or t.name}: {title}", multi_model)
            out.append(f"![{t.name} {kind}]({assets.name}/{name})")
        out.append("")
    for g in groups:
        name = f"{t.name}_{g.config}" + (f"_{run_name(g.model, 0)[:-3]}" if multi_model else "") \
            + "_connectivity.png"
        best = best_run(g)
        src = best.dir / "connectivity.png" if best else None
        if src is not None and src.is_file() and src.resolve() != (assets / name).resolve():
            with atomic_path(assets / name, WHERE) as tmp:
                tmp.write_bytes(src.read_bytes())
        if (assets / name).is_file():   # kept from an earlier render when re-rendering from copies
            label = f"{g.config}" + (f" ({g.model})" if multi_model else "")
            seed = f", seed {best.seed}" if best else ""
            out.append(f"- connectivity of {label}{seed} (highest val acc): "
                       f"[{name}]({assets.name}/{name})")
    return out + [""] if out and out[-1] != "" else out


def _per_run(t: TableSpec, groups: list[Group], assets: Path) -> list[str]:
    out = ["<details><summary>Per run</summary>", "",
           "| run | best epoch | val acc | test acc | final test acc | params test | blocks kept "
           "| train s | at freeze: tied / close / rows | entropy at freeze "
           "| chosen changed per epoch |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        for r in g.runs:
            rel = Path(os.path.relpath(run_dir(assets / "runs", t.name, r.config, r.model, r.seed),
                                       assets.parent)).as_posix()
            link = f"[{r.config}/{r.dir.name}]({rel}/)"
            if r.result is None:
                state = (f"not done ({len(r.rows)} epoch{'s' if len(r.rows) > 1 else ''})"
                         if r.rows else "not started")
                out.append(f"| {link} | {state} | | | | | | | | | |")
                continue
            x = r.result
            out.append(f"| {link} | {x['best_epoch']} | {fmt(x.get('best_val_acc'))} | "
                       f"{fmt(x['test_acc'])} | {fmt(x['final_test_acc'])} | "
                       f"{x['params_test']:,} | "
                       f"{x['blocks_kept']}/{x['blocks_total']} | {x['train_seconds']:.0f} | "
                       + _decisiveness(r.rows) + " |")
    return out + ["", "</details>", ""]


def _decisiveness(rows: list[dict[str, Any]]) -> str:
    """How the masks were decided: at the freeze, rows whose top-K boundary was an exact tie in
    m~ or closer than the margin (the trainer's ``freeze`` record), the mask entropy then, and
    how many chosen inputs changed in each epoch. Fixed wirings have none of it."""
    fr = next((r["freeze"] for r in rows if "freeze" in r), None)
    changed = ", ".join(str(r.get("chosen_changed", DASH)) for r in rows)
    if fr is None:
        return f"{DASH} | {DASH} | {changed}"
    return f"{fr['ties']} / {fr['close']} / {fr['rows']} | {fr['mask_entropy']:.2f} | {changed}"


def budget_section(spec: Spec, runs: list[RunData]) -> list[str]:
    done = [r.result for r in runs if r.result is not None]
    out = ["## Budget", ""]
    for t in spec.tables:
        opts = [t.options(c.name) for c in t.configs]
        parts = []
        for key in ("data", "epochs", "batch_size", "max_train_samples", "val_size"):
            vals = sorted({str(o.get(key, default(TrainConfig, key))) for o in opts})
            if key in ("max_train_samples", "val_size") and vals == ["None"]:
                continue
            parts.append(f"{key} {', '.join(vals)}")
        out.append(f"- {t.name}: {'; '.join(parts)}; models {', '.join(t.models)}; "
                   f"seeds {', '.join(map(str, t.seeds))}")
    secs = sum(float(r.get("train_seconds", 0.0)) for r in done)
    out.append(f"- training wall time: {secs:,.0f} s ({secs / 3600:.2f} h) over {len(done)} "
               f"finished runs of {len(runs)}")
    machines = sorted({_machine(r.get("machine") or {}) for r in done})
    out += [f"- machine: {m}" for m in machines]
    return out + [""]


def _machine(m: dict[str, Any]) -> str:
    return (f"{m.get('platform', '?')}, {m.get('processor', '?')}, {m.get('cpu_count', '?')} CPUs, "
            f"torch {m.get('torch', '?')}, onnxruntime {m.get('onnxruntime', '?')}, "
            f"trained on {m.get('device', '?')}")


def _copy_small(src: Path, dst: Path) -> None:
    for name in SMALL_FILES:
        if (src / name).is_file():
            dst.mkdir(parents=True, exist_ok=True)
            write_text_atomic(dst / name, (src / name).read_text(), WHERE)


# ------------------------------------------------------------------ pictures
def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, *plt.subplots(figsize=(7, 4.5))


def _save(plt, fig, ax, path: Path, title: str) -> None:
    ax.set_title("\n".join(textwrap.wrap(title, 75)), fontsize=10)   # long titles would be cut
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, WHERE) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _label(g: Group, multi_model: bool) -> str:
    return g.config + (f" ({g.model})" if multi_model else "")


def curves(groups: list[Group], path: Path, title: str, multi_model: bool) -> None:
    """Test accuracy per epoch, mean over the finished seeds; validation dashed."""
    plt, fig, ax = _figure()
    for i, g in enumerate(groups):
        rows = [r.rows for r in g.runs if r.result is not None and r.rows]
        if not rows:
            continue
        n, color = min(len(x) for x in rows), f"C{i % 10}"
        epochs = [rows[0][e]["epoch"] for e in range(n)]
        ax.plot(epochs, [statistics.fmean(x[e]["test_acc"] for x in rows) for e in range(n)],
                color=color, marker="o", label=_label(g, multi_model))
        if all(x[e].get("val_acc") is not None for x in rows for e in range(n)):
            ax.plot(epochs, [statistics.fmean(x[e]["val_acc"] for x in rows) for e in range(n)],
                    color=color, ls="--")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("accuracy (%)")
    _save(plt, fig, ax, path, title)


def _scatter(key: str, xlabel: str):
    def plot(groups: list[Group], path: Path, title: str, multi_model: bool) -> None:
        plt, fig, ax = _figure()
        for i, g in enumerate(groups):
            pts = [(r[key], r["test_acc"]) for r in g.done if r.get(key) is not None]
            if pts:
                ax.scatter(*zip(*pts), color=f"C{i % 10}", label=_label(g, multi_model))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        _save(plt, fig, ax, path, title)
    return plot


PLOTS = {"curves": curves, "acc_vs_params": _scatter("params_test", "parameters at test time"),
         "acc_vs_latency": _scatter("latency_ms_b64", "onnxruntime latency, batch 64 (ms)")}
__all__ = ["render", "collect", "compare", "best_run", "Group", "RunData"]
