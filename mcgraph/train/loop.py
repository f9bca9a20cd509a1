"""The training loop: weights and connectivity together, then weights alone on frozen masks.

    result = train(TrainConfig(model="resnet20", data="fashion-mnist", epochs=2, out="runs/r20"))

Writes ``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt`` (every epoch and on
stop) and ``best.pt`` into ``cfg.out``. Ctrl-C finishes the current step, saves ``last.pt`` and
stops; ``--resume`` continues bit for bit (same batches, same mask draws, same optimizer state).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from tqdm import tqdm

from ..api import load, rewrite
from ..checkpoint import read_checkpoint
from ..errors import McGraphError
from ..ir import ModuleDAG
from ..masks import clip_masks_, freeze_masks, mask_modules, renormalize_mask_grads_
from ..passes import eliminate_dead, lower_masks
from . import distributed as D
from .config import CONNECTIVITY, TrainConfig
from .data import Data, DataSpec, load_data, make_loader
from .metrics import chosen_changed, chosen_sets, evaluate, mask_entropy, summarize
from .state import save_training, set_rng_state


class Interrupted(McGraphError):
    """Ctrl-C: the state was saved; the CLI exits with 130."""


@dataclass
class TrainResult:
    out: str
    epochs_done: int
    steps: int
    best_acc: float
    last_acc: float | None
    seconds: float
    stopped: str                      # "done" | "max_steps"
    metrics: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise McGraphError("train", "--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise McGraphError("train", f"unknown device '{name}', expected auto, cpu or cuda")
    return torch.device(name)


def build_model(cfg: TrainConfig, spec: DataSpec) -> fx.GraphModule:
    """A masked model for ``spec``: rewritten from a registered name, or loaded from a .pt."""
    if cfg.connectivity not in CONNECTIVITY:
        raise McGraphError("train", f"unknown connectivity '{cfg.connectivity}'")
    want = [spec.in_channels, *spec.input_size]
    if cfg.model.endswith(".pt") or Path(cfg.model).is_file():
        gm = load(cfg.model)
        rw = gm.meta["mcgraph"]["rewrite"]
        if list(rw["input_shape"]) != want:
            raise McGraphError("train", f"{cfg.model} was rewritten for inputs {rw['input_shape']} "
                                        f"but {spec.name} has {want}; rewrite with --in-channels "
                                        f"{want[0]} --input-size {want[1]}x{want[2]}")
        if rw["model_kwargs"]["num_classes"] != spec.num_classes:
            raise McGraphError("train", f"{cfg.model} has {rw['model_kwargs']['num_classes']} classes, "
                                        f"{spec.name} has {spec.num_classes}")
    else:
        kw = dict(seed=cfg.seed, num_classes=spec.num_classes, in_channels=spec.in_channels,
                  input_size=spec.input_size, mask_grad=cfg.mask_grad,
                  aggregate=cfg.aggregate)
        mode = cfg.connectivity
        if mode == "fixed-prev":
            gm = rewrite(cfg.model, 1, "prev", **kw)
        elif mode == "fixed-full":
            probe = rewrite(cfg.model, 1, "full", **kw)
            gm = rewrite(cfg.model, max(m.num_candidates for m in mask_modules(probe)), "full", **kw)
        else:
            init = cfg.init or ("random" if mode == "fixed-random" else "uniform")
            gm = rewrite(cfg.model, cfg.fan_in, init, **kw)
    apply_connectivity(gm, cfg.connectivity, cfg.seed)
    return gm


def apply_connectivity(gm: fx.GraphModule, mode: str, seed: int) -> fx.GraphModule:
    """Freeze the masks by a fixed rule (``fixed-*``); ``learned`` leaves them to training."""
    for m in mask_modules(gm):
        n, k = m.num_candidates, m.fan_in
        if mode == "fixed-prev":
            if k != 1 or m.rows != 1:
                raise McGraphError("train", f"fixed-prev reads only the previous block (K=1, "
                                            f"module level); {m.target} has K={k}")
            m.freeze([n - 1])          # the last candidate is the block's original input
        elif mode == "fixed-full":
            if k < n:
                raise McGraphError("train", f"fixed-full reads every candidate; {m.target} has "
                                            f"K={k} < {n} candidates")
            m.freeze([list(range(n))] * m.rows)
        elif mode == "fixed-random":   # K inputs per row drawn once, uniformly, never changed
            g = torch.Generator().manual_seed(seed * 7919 + m.index)
            m.freeze([torch.randperm(n, generator=g)[:k].tolist() for _ in range(m.rows)])
    return gm


def training_view(model: fx.GraphModule) -> fx.GraphModule:
    """Once every mask is frozen: the lowered graph without dead blocks, sharing its parameters
    with ``model`` (so training it trains ``model``, and checkpoints of ``model`` see it). Dead
    blocks are no longer computed and the masked sums become plain adds. Branch-level models
    (whose pruning slices parameters into new tensors) train as they are."""
    if ModuleDAG.from_graph_module(model).level == "branch":
        return model
    graph = fx.Graph()
    graph.output(graph.graph_copy(model.graph, {}))
    view = fx.GraphModule(model, graph)   # new containers, the same leaf modules
    view.meta["mcgraph"] = model.meta.get("mcgraph", {})
    dag = ModuleDAG.from_graph_module(model)
    return eliminate_dead(lower_masks(view), dag).train(model.training)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    masks = [m.mask for m in mask_modules(model)]
    ids = {id(p) for p in masks}
    weights = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD(
        [{"params": weights, "name": "weights"},
         {"params": masks, "name": "masks", "lr": cfg.mask_lr, "momentum": cfg.mask_momentum,
          "nesterov": False, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay)


def _schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    def weights(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        if cfg.schedule == "step":
            return 0.1 ** ((t >= 0.5) + (t >= 0.75))
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule not in ("cosine", "step"):
        raise McGraphError("train", f"unknown schedule '{cfg.schedule}', expected cosine or step")
    return torch.optim.lr_scheduler.LambdaLR(opt, [weights, lambda step: 1.0])


def _agree(dist: D.Dist, device: torch.device, bad: bool, stop: bool) -> tuple[bool, bool]:
    """Ranks decide together (a rank that stops alone would hang the others' all-reduce)."""
    if not dist.enabled:
        return bad, stop
    b, s = D.all_sum([float(bad), float(stop)], dist, device)
    return b > 0, s > 0


def _check(cfg: TrainConfig) -> None:
    for name in ("lr", "mask_lr", "weight_decay", "momentum", "mask_momentum", "label_smoothing"):
        if getattr(cfg, name) < 0:
            raise McGraphError("train", f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    for name in ("max_steps", "max_train_samples", "max_test_samples"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise McGraphError("train", f"--{name.replace('_', '-')} must be >= 1, got {v}")


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts."""

    def __init__(self):
        self.set, self._old = False, None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:            # not the main thread: no handler, default behaviour
            self._old = None
        return self

    def _handle(self, *_):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train(cfg: TrainConfig, data: Data | None = None,
          model: fx.GraphModule | None = None) -> TrainResult:
    """Run (or resume) a training job as configured; see the module docstring.

    ``data`` and ``model`` (a masked GraphModule, e.g. a user's own network after
    :func:`mcgraph.rewrite`) replace ``cfg.data`` and ``cfg.model`` when given."""
    out = Path(cfg.out)
    resume_ckpt = None
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise McGraphError("train", f"nothing to resume: {out / 'last.pt'} does not exist")
        resume_ckpt = read_checkpoint(out / "last.pt")
        if "train" not in resume_ckpt:
            raise McGraphError("train", f"{out / 'last.pt'} holds no training state")
        known = TrainConfig.__dataclass_fields__
        saved = TrainConfig(**{k: v for k, v in resume_ckpt["train"]["config"].items() if k in known})
        cfg = dataclasses.replace(saved, resume=True, max_steps=cfg.max_steps, device=cfg.device,
                                  progress=cfg.progress)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise McGraphError("train", f"epochs and batch size must be >= 1, got {cfg.epochs}, "
                                    f"{cfg.batch_size}")
    _check(cfg)
    if not 0.0 <= cfg.freeze_at <= 1.0:
        raise McGraphError("train", f"--freeze-at is a fraction of the epochs in [0, 1], got {cfg.freeze_at}")
    device = resolve_device(cfg.device)
    dist = D.init(device)
    try:
        return _run(cfg, data, model, out, device, dist, resume_ckpt)
    finally:
        D.shutdown(dist)


def _run(cfg: TrainConfig, data: Data | None, given: fx.GraphModule | None, out: Path,
         device: torch.device, dist: D.Dist, resume_ckpt: dict[str, Any] | None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    data = data or load_data(cfg.data, cfg.data_dir)
    spec = data.spec
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    if given is not None:
        model = given
        if resume_ckpt:
            model.load_state_dict(resume_ckpt["state_dict"])
            for m in mask_modules(model):
                m.mask.requires_grad_(not bool(m.frozen))
        else:
            apply_connectivity(model, cfg.connectivity, cfg.seed)
    else:
        model = load(resume_ckpt) if resume_ckpt else build_model(cfg, spec)
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    amp = (device.type == "cuda") if cfg.amp is None else (cfg.amp and device.type == "cuda")
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    opt = _optimizer(model, cfg)
    loader_kw = dict(seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, device=device)
    steps_per_epoch = len(make_loader(data, "train", cfg.batch_size, shuffle=True, augment=True,
                                      drop_last=True, max_samples=cfg.max_train_samples, **loader_kw))
    if steps_per_epoch == 0:
        raise McGraphError("train", f"batch size {cfg.batch_size} is larger than the training set")
    sched = _schedule(opt, cfg, cfg.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    freeze_step = round(cfg.freeze_at * cfg.epochs * steps_per_epoch)
    epoch = batch0 = step = 0
    best = -1.0
    if resume_ckpt:
        t = resume_ckpt["train"]
        opt.load_state_dict(t["optimizer"])
        sched.load_state_dict(t["scheduler"])
        if amp and t["scaler"]:           # a CPU run's disabled scaler has an empty state
            scaler.load_state_dict(t["scaler"])
        epoch, batch0, step, best = t["epoch"], t["batch"], t["step"], t["best_acc"]
        set_rng_state(t["rng"])
    elif dist.main:
        info = {**cfg.to_dict(), "device": str(device), "world_size": dist.world_size,
                "steps_per_epoch": steps_per_epoch, "freeze_step": freeze_step,
                "channels_last": channels_last, "amp": amp, "data_spec": dataclasses.asdict(spec),
                "rewrite": model.meta["mcgraph"]["rewrite"]}
        (out / "config.json").write_text(json.dumps(info, indent=2) + "\n")
        (out / "metrics.jsonl").write_text("")
    learning = any(not bool(m.frozen) for m in mask_modules(model))   # checked once, not per step
    net = D.wrap(model if learning else training_view(model), dist, device)
    t_start, history, last_acc, stopped = time.perf_counter(), [], None, "done"

    def save(name: str, ep: int, b: int) -> None:
        if dist.main:
            save_training(out / name, model, opt, sched, scaler, epoch=ep, batch=b, step=step,
                          best_acc=best, config=cfg.to_dict())

    with _StopFlag() as stop:
        while epoch < cfg.epochs:
            before = chosen_sets(model)
            loader = make_loader(data, "train", cfg.batch_size, shuffle=True, augment=True,
                                 drop_last=True, epoch=epoch, max_samples=cfg.max_train_samples,
                                 **loader_kw)
            batches = itertools.islice(iter(loader), batch0, None)   # resume mid-epoch
            net.train()
            loss_sum = correct = seen = 0.0
            t0 = time.perf_counter()
            bar = tqdm(total=len(loader), initial=batch0, disable=not (cfg.progress and dist.main),
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
            b = batch0
            for b, (x, y) in enumerate(batches, start=batch0):
                if learning and step >= freeze_step:
                    freeze_masks(model)
                    learning = False
                    net = D.wrap(training_view(model), dist, device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, enabled=amp):
                    logits = net(x)
                    loss = nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                bad, stopping = _agree(dist, device, not bool(torch.isfinite(loss)), stop.set)
                if bad:   # every rank stops together; last.pt keeps the last good epoch
                    raise McGraphError("train", f"loss is not finite at epoch {epoch + 1}, step "
                                                f"{step + 1}; lower --lr or --mask-lr (last good "
                                                f"state: {out / 'last.pt'}, if an epoch finished)")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if amp:
                    scaler.unscale_(opt)
                    renormalize_mask_grads_(model)
                scaler.step(opt)
                scaler.update()
                clip_masks_(model)
                sched.step()
                step += 1
                loss_sum += float(loss.detach()) * y.numel()
                correct += float((logits.argmax(1) == y).sum())
                seen += y.numel()
                dt = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                                img_s=f"{seen * dist.world_size / dt:.0f}")
                if stopping:
                    save("last.pt", epoch, b + 1)
                    bar.close()
                    raise Interrupted("train", f"interrupted at epoch {epoch + 1}, step {step}; "
                                               f"state saved to {out / 'last.pt'}; continue with --resume")
                if cfg.max_steps is not None and step >= cfg.max_steps and b + 1 < len(loader):
                    stopped = "max_steps"
                    break
            bar.close()
            if stopped == "max_steps":
                save("last.pt", epoch, b + 1)
                break
            epoch_time = time.perf_counter() - t0
            tr = D.all_sum([loss_sum, correct, seen], dist, device)
            test = evaluate(net, make_loader(data, "test", cfg.eval_batch_size, shuffle=False,
                                             augment=False, max_samples=cfg.max_test_samples,
                                             **loader_kw), spec.num_classes, amp, channels_last)
            test = summarize(D.all_sum(test["sums"], dist, device), spec.num_classes)
            last_acc = test["acc"]
            row = {"epoch": epoch + 1, "step": step, "train_loss": tr[0] / max(tr[2], 1),
                   "train_acc": 100 * tr[1] / max(tr[2], 1), "test_acc": test["acc"],
                   "test_loss": test["loss"], **({"test_top5": test["top5"]} if "top5" in test else {}),
                   "lr": opt.param_groups[0]["lr"], "mask_lr": opt.param_groups[1]["lr"],
                   "masks_frozen": all(bool(m.frozen) for m in mask_modules(model)),
                   "mask_entropy": mask_entropy(model),
                   "chosen_changed": chosen_changed(before, chosen_sets(model)),
                   "images_per_s": tr[2] / max(epoch_time, 1e-9), "seconds": epoch_time}
            history.append(row)
            epoch, batch0 = epoch + 1, 0
            if dist.main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                if test["acc"] > best:
                    best = test["acc"]
                    save("best.pt", epoch, 0)
                save("last.pt", epoch, 0)
                if cfg.progress:
                    tqdm.write(f"epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.3f}  "
                               f"train {row['train_acc']:.1f}%  test {test['acc']:.2f}%  "
                               f"entropy {row['mask_entropy']:.2f}  changed {row['chosen_changed']}  "
                               f"{row['images_per_s']:.0f} img/s")
            if cfg.max_steps is not None and step >= cfg.max_steps and epoch < cfg.epochs:
                stopped = "max_steps"
                break
    D.barrier(dist)
    return TrainResult(str(out), epoch, step, best, last_acc, time.perf_counter() - t_start,
                       stopped, history)
