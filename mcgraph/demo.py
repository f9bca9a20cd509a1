"""The main job end to end: rewrite, train connectivity on Fashion-MNIST, compile, export, deploy.

    mcgraph demo                      # resnet20, K=1, 2 epochs, about 4 minutes on 2 CPU cores

The recipe (chosen on the validation split; docs/results.md "demo"): learn K=1
connectivity from uniform masks for the first 15% of 2 epochs on all training images (less the
5,000 held out for validation), without augmentation, then fine-tune the frozen wiring on the
lowered graph (only the blocks the wiring reads are computed). ``--retrain`` instead learns the
wiring in a short search and retrains it from fresh weights (Table 1's chain-of-learned). The
demo prints beside its own figures the Fixed-Prev (original network) accuracy of the same
budget, shipped as package data (``mcgraph/data/demo_baseline.json``, written by the experiment
renderer from the committed runs), and compares with it only when those runs trained on this
machine's kind of CPU; otherwise it shows the figure and says it is not comparable.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import load
from .config import check, validate_literals
from .datainfo import checkpoint_data
from .device import DeviceName, cpu_model
from .errors import McGraphError
from .ir import dag_of
from .masks import Constraint, Init
from .measure import compile_export_time, original_onnx, time_onnx
from .sources import parse_source
from .train.config import TrainConfig

BASELINE = Path(__file__).resolve().parent / "data" / "demo_baseline.json"   # package data
SAME_BUDGET = ("model", "data", "epochs", "batch_size", "lr", "max_train_samples", "val_size",
               "augment")


@dataclass(frozen=True)
class DemoConfig:
    model: str = "resnet20"
    data: str = "fashion-mnist"
    data_dir: str | None = None
    fan_in: int = 1                     # K=1 prunes: every unread block is deleted at compile
    init: Init | None = None            # None: 'uniform', the trainer's default
    epochs: int = 2                     # the final training (the retrain, or the only run)
    batch_size: int = 128
    lr: float = 0.1
    mask_lr: float = 0.05
    mask_constraint: Constraint = "simplex"
    freeze_at: float = 0.15             # chosen on validation (docs/results.md "demo")
    augment: bool = False               # 2 epochs: augmentation costs accuracy (validation)
    out: str = "demo-out"
    device: DeviceName = "auto"
    seed: int = 0
    max_train_samples: int | None = None
    retrain: bool = False               # retrain the learned wiring from fresh weights
    search_epochs: int = 1              # the connectivity search before the retrain
    search_samples: int | None = 20000  # training images the search uses
    progress: bool = True

    def __post_init__(self) -> None:
        validate_literals(self, "demo")
        for name in ("epochs", "batch_size", "fan_in", "search_epochs"):
            v = getattr(self, name)
            check(v >= 1, "demo", name, f"must be >= 1, got {v}")
        for name in ("search_samples", "max_train_samples"):   # named here, not as train's
            v = getattr(self, name)
            check(v is None or v >= 1, "demo", name, f"must be >= 1, got {v}")
        self.first_train_config()          # the rest as training checks it, before any output

    def recipe(self) -> dict[str, Any]:
        """The TrainConfig fields both trainings share."""
        return dict(model=self.model, data=self.data, data_dir=self.data_dir, fan_in=self.fan_in,
                    epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device,
                    seed=self.seed, max_train_samples=self.max_train_samples,
                    progress=self.progress, augment=self.augment)

    def first_train_config(self) -> TrainConfig:
        """The first training: the connectivity search (``retrain``) or the only run."""
        out = Path(self.out) / ("search" if self.retrain else "train")
        budget = (dict(epochs=self.search_epochs, max_train_samples=self.search_samples)
                  if self.retrain else {})
        try:
            return TrainConfig(out=str(out), overwrite=True, init=self.init, mask_lr=self.mask_lr,
                               mask_constraint=self.mask_constraint, freeze_at=self.freeze_at,
                               **{**self.recipe(), **budget})
        except McGraphError as e:
            raise McGraphError("demo", e.message, e.option) from None


def _prepare_out(cfg: DemoConfig, out: Path) -> None:
    """Check the model, the data set and ``out`` (one line, nothing written), then create
    ``out``."""
    from .train.data import load_data

    if out.exists() and not out.is_dir():
        raise McGraphError("demo", f"out {out} is not a directory", "out")
    if not (cfg.model.endswith(".pt") or Path(cfg.model).is_file()):
        parse_source(cfg.model)            # an unknown model or data set: one line, nothing written
    load_data(cfg.data, cfg.data_dir)
    out.mkdir(parents=True, exist_ok=True)


def _train_demo(cfg: DemoConfig, out: Path, steps: int, log) -> float:
    """Train weights and connectivity (then, with ``retrain``, the learned wiring from fresh
    weights) into ``out/train``; the first training's best test accuracy."""
    from .train.loop import train

    log(f"[1/{steps}] rewrite {cfg.model} (K={cfg.fan_in}) and train weights + connectivity "
        f"on {cfg.data}")
    first = cfg.first_train_config()
    search_acc = train(first).best_acc
    if cfg.retrain:
        # Table 1: the learned chain retrained from fresh weights beat the jointly trained one
        log(f"[2/{steps}] retrain the learned wiring from fresh weights "
            "(Table 1's chain-of-learned-k1)")
        train(TrainConfig(out=str(out / "train"), overwrite=True, connectivity="fixed-wiring",
                          wiring_from=str(Path(first.out) / "best.pt"), **cfg.recipe()))
    return search_acc


def run_demo(cfg: DemoConfig, log=print) -> dict[str, Any]:
    from .evaluate import evaluate_path
    from .plot import plot_connectivity

    t0 = time.perf_counter()
    out = Path(cfg.out)
    _prepare_out(cfg, out)
    steps = 5 if cfg.retrain else 4
    search_acc = _train_demo(cfg, out, steps, log)
    t_train = time.perf_counter() - t0
    ckpt = out / "train" / "best.pt"
    step = iter(range(3 if cfg.retrain else 2, steps + 1))
    log(f"[{next(step)}/{steps}] compile: freeze masks, remove unread modules, export ONNX, "
        "verify in onnxruntime")
    masked = load(ckpt)
    # the original wiring (every block present), for size and latency side by side
    full = original_onnx(masked, out / "original.onnx")
    log(f"[{next(step)}/{steps}] evaluate in PyTorch and in onnxruntime")
    m = compile_export_time(masked, out / "model.onnx", verify=True, device=cfg.device,
                            batches=(), data=checkpoint_data(ckpt))
    report, onnx_path = m.report, m.onnx_path
    acc_pt = evaluate_path(str(ckpt), cfg.data, cfg.data_dir, device=cfg.device)["acc"]
    acc_ort = evaluate_path(str(onnx_path), cfg.data, cfg.data_dir, device=cfg.device)["acc"]
    log(f"[{next(step)}/{steps}] latency (onnxruntime, batch 1 and 64, median of 50 and 20) "
        "and the connectivity picture")
    shape = tuple(report.input_shape)
    lat = {name: time_onnx(path, shape, device=cfg.device)[0]
           for name, path in (("original", full), ("compiled", onnx_path))}
    png = plot_connectivity(dag_of(masked), out / "connectivity.png",
                            title=f"{cfg.model} K={cfg.fan_in} on {cfg.data}")
    result = {
        "model": cfg.model, "fan_in": cfg.fan_in, "epochs": cfg.epochs,
        "test_acc_pytorch": acc_pt, "test_acc_onnxruntime": acc_ort,
        "params_before": report.params_before, "params_after": report.params_after,
        "modules_before": report.modules_before, "modules_after": report.modules_after,
        "removed": report.removed, "onnx_max_abs_diff": report.onnx_max_abs_diff,
        "latency_ms_b1_original": lat["original"][1],
        "latency_ms_b1_compiled": lat["compiled"][1],
        "latency_ms_b64_original": lat["original"][64],
        "latency_ms_b64_compiled": lat["compiled"][64],
        "search_test_acc": search_acc, "retrained": cfg.retrain,
        "baseline": committed_baseline(cfg, acc_ort),
        "train_seconds": round(t_train, 1), "total_seconds": round(time.perf_counter() - t0, 1),
        "onnx_path": str(onnx_path), "png_path": str(png), "checkpoint": str(ckpt),
    }
    return result


def committed_baseline(cfg: DemoConfig, acc: float, config: str = "fixed-prev",
                       path: Path = BASELINE) -> dict[str, Any]:
    """The shipped ``config`` runs (default Fixed-Prev, the original network) of the demo's
    budget (:data:`BASELINE`, written by the experiment renderer from the committed demo table),
    and what this run gained or lost against them. ``comparable`` is whether they trained on
    this machine's kind of CPU: the same seed differs by about a point between CPU kinds, ten
    times the spread over seeds, so across kinds the figures are shown, not compared.
    ``{"found": False, "why": ...}`` when no run has this budget."""
    import statistics
    want = {"model": cfg.model, "data": cfg.data, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr, "max_train_samples": cfg.max_train_samples, "val_size": None,
            "augment": cfg.augment}
    try:
        runs = json.loads(Path(path).read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return {"found": False, "why": f"no baseline shipped ({Path(path).name})"}
    runs = [r for r in runs if r.get("config") == config
            and all(r.get("recipe", {}).get(k) == want[k] for k in SAME_BUDGET)]
    if not runs:
        return {"found": False, "why": f"no shipped {config} run has this budget"}
    accs = [float(r["test_acc"]) for r in runs]
    mean, here = statistics.fmean(accs), cpu_model()
    cpus = sorted({str(r.get("processor")) for r in runs})
    return {"found": True, "config": config, "seeds": len(accs), "test_acc_mean": mean,
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "gain_points": acc - mean, "trained_on": ", ".join(cpus), "this_machine": here,
            "comparable": cpus == [here]}


DEMO_TABLE = "demo"      # the table of experiments/results.json whose runs are the baseline


def write_baseline(table: str, title: str, groups: list) -> Path:
    """The demo's baseline as package data (:data:`BASELINE`), written by the experiment
    renderer from the demo table's finished runs (``groups``): each with its recipe and the
    CPU it trained on, so that an installed ``mcgraph demo`` compares itself only with runs of
    the same budget and says whether they ran on this kind of machine."""
    from .io import write_text_atomic
    from .rundir import read_config
    runs = [{"config": g.config, "model": g.model, "seed": r.seed,
             "test_acc": r.result["test_acc"], "val_acc": r.result.get("best_val_acc"),
             "processor": (r.result.get("machine") or {}).get("processor"),
             "recipe": {k: (read_config(r.dir) or {}).get(k) for k in SAME_BUDGET}}
            for g in groups for r in g.runs if r.result is not None]
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(BASELINE, json.dumps({"table": table, "title": title, "runs": runs},
                                           indent=1) + "\n", "experiment")
    return BASELINE
