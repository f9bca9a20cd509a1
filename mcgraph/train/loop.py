"""The training loop: weights and connectivity together, then weights alone on frozen masks.

    result = train(TrainConfig(model="resnet20", data="fashion-mnist", epochs=2, out="runs/r20"))

Writes ``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt`` (every epoch and on
stop) and ``best.pt`` into ``cfg.out``. ``best.pt`` is the epoch with the best accuracy on the
validation split held out from the training images (``val_size``); without one, the last
epoch. Test accuracy is logged for curves; no choice reads it. Ctrl-C or SIGTERM finishes the
current step, saves ``last.pt`` and stops (:mod:`.signals`); ``save_every`` also writes it every
that many steps. ``resume=True`` continues bit for bit (same batches, same mask draws, same
optimizer state), with new learning rates if given (:mod:`.resume`). A non-finite loss (or
weights) stops the run naming the step, the loss and the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import fx, nn
from tqdm import tqdm

from .. import graph_meta, rundir
from ..api import load
from ..device import machine_info, resolve_device
from ..errors import Interrupted, McGraphError
from ..io import remove_stale_temps
from ..mask_ops import set_grad_samples, set_temperature
from ..masks import mask_modules
from . import distributed as D
from .build import apply_connectivity, build_model, checkpoint_options, is_checkpoint, training_view
from .config import TrainConfig
from .data import Data, load_data, make_loader
from .epoch_end import EpochEnd
from .freeze import FreezeTransition, weights_of
from .metrics import (
    chosen_sets,
)
from .optim import GROUPS, make_schedule, set_base_lrs
from .resume import Changes, describe_changes, merge_pending, record_changes, resume_config
from .signals import StopFlag
from .split import split_validation
from .state import position, save_training, set_rng_state
from .step import Stepper

__all__ = ["Interrupted", "StopFlag", "TrainResult", "Trainer", "resume_config", "train"]
WHERE = "train"
ANNEAL_FLOOR = 0.05          # mask_anneal's last temperature before the freeze


@dataclass
class TrainResult:
    out: str
    epochs_done: int
    steps: int
    best_acc: float | None            # test accuracy of the epoch best.pt holds (None: no best.pt)
    last_acc: float | None
    seconds: float
    stopped: str                      # "done" | "max_steps"
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_val_acc: float | None = None  # the validation accuracy best.pt was chosen on
    best_epoch: int = 0


def train(cfg: TrainConfig, data: Data | None = None, model: fx.GraphModule | None = None,
          given: Iterable[str] = ()) -> TrainResult:
    """Run (or resume) a training job as configured; see the module docstring.

    ``data`` and ``model`` (a masked GraphModule, e.g. a user's own network after
    :func:`mcgraph.rewrite`) replace ``cfg.data`` and ``cfg.model`` when given. ``given``: the
    fields of ``cfg`` its caller set; with ``resume``, ``lr``, ``mask_lr`` and ``save_every``
    among them replace the saved run's, and others must equal it (:mod:`.resume`)."""
    ckpt, changes = None, {}
    if cfg.resume:
        cfg, ckpt, changes = resume_config(cfg, given)
    elif model is None and is_checkpoint(cfg.model):
        cfg = checkpoint_options(cfg, given)
    device = resolve_device(cfg.device, WHERE)
    dist = D.init(device)
    try:
        with _holding(cfg, dist):
            return Trainer(cfg, device, dist, data, model, ckpt, changes).run()
    finally:
        D.shutdown(dist)


def _holding(cfg: TrainConfig, dist: D.Dist):
    """The out directory, held by the main rank while it trains (other ranks only read)."""
    out = Path(cfg.out)
    if not dist.main or (out.exists() and not out.is_dir()):
        return contextlib.nullcontext()     # (a file as out is refused by the trainer)
    return rundir.locked(out, WHERE)


class Trainer(FreezeTransition, EpochEnd):
    """One run: set-up, restore, step, freeze transition, epoch, evaluation, checkpoints."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist: D.Dist,
                 data: Data | None = None, model: fx.GraphModule | None = None,
                 ckpt: dict[str, Any] | None = None, changes: Changes | None = None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.device, self.dist, self.out = cfg, device, dist, Path(cfg.out)
        self.data = data or load_data(cfg.data, cfg.data_dir)
        if self.data.val is None:
            self.data = split_validation(self.data, cfg.val_size)
        self.channels_last = True if cfg.channels_last is None else cfg.channels_last
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = set_grad_samples(self._model(model, ckpt),
                                      cfg.mask_grad_samples or None).to(device, memory_format=fmt)
        self.stepper = Stepper(self.model, cfg, device, dist.world_size, self.channels_last)
        self.opt, self.scaler, self.amp = self.stepper.opt, self.stepper.scaler, self.stepper.amp
        self.steps_per_epoch = len(self._loader("train", 0))
        if self.steps_per_epoch == 0:
            raise McGraphError(WHERE,
                               f"batch size {cfg.batch_size} is larger than the training set",
                               "batch_size")
        self.sched = make_schedule(self.opt, cfg, cfg.epochs * self.steps_per_epoch)
        self.freeze_step = round(cfg.freeze_at * cfg.epochs * self.steps_per_epoch)
        self.epoch = self.batch0 = self.step = 0
        self.best: float | None = None        # test acc of the epoch best.pt holds
        self.last_acc, self.stopped = None, "done"
        self.best_val: float | None = None    # selection key; best = that epoch's test acc
        self.best_epoch = 0
        self.freeze_stats: dict[str, Any] | None = None
        self.partial = [0.0, 0.0, 0.0, 0.0]   # [loss sum, correct, seen, seconds] before a resume
        self.epoch_chosen: dict | None = None  # the chosen inputs when the epoch began
        self.history: list[dict[str, Any]] = []
        self.good: str | None = None          # the last good checkpoint, for a divergence
        self.pending: dict[str, Any] | None = None    # resume changes the next row reports
        self.last_loss, self.stop = float("nan"), None
        self._prepare_out()
        if ckpt:
            self.restore(ckpt["train"])
            if changes:
                self.change_settings(changes)
        self.learning = any(not m.is_frozen for m in mask_modules(self.model))
        self.init_weights = self._learning_setup(ckpt)
        net = self.model if self.learning else training_view(self.model)
        self.stepper.set_net(D.wrap(net, dist, device, find_unused=net is self.model))
        if not ckpt and dist.main:        # after set_net: it decides whether steps are captured
            self._write_config()

    def _prepare_out(self) -> None:
        """Refuse an out directory holding another run (every rank looks before rank 0 writes),
        create it, and clear what a killed writer left."""
        cfg, dist = self.cfg, self.dist
        rundir.check_new_run(self.out, cfg.resume, cfg.overwrite, dist.main, WHERE)
        D.barrier(dist)
        if not dist.main:
            return
        if self.out.exists() and not self.out.is_dir():
            raise McGraphError(WHERE, f"out {self.out} is not a directory", "out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise McGraphError(WHERE, f"out {self.out}: cannot create the directory "
                                      f"({e.strerror or e})", "out") from None
        remove_stale_temps(self.out, rundir.RUN_FILES)

    def _learning_setup(self, ckpt: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
        """Checks a size target now (not at the freeze); the initial weights ``reinit_at_freeze``
        restarts from (saved in checkpoints until the freeze), or None."""
        cfg = self.cfg
        if not self.learning:
            return None
        if cfg.target_macs or cfg.target_blocks:
            from ..target import costs
            costs(self.model)                    # K=1, module level: refused now
        if not cfg.reinit_at_freeze:
            return None
        saved = ckpt["train"].get("init_weights") if ckpt else None
        return saved if saved is not None else weights_of(self.model)

    @property
    def net(self) -> nn.Module:
        """The network a step runs: the masked model while masks learn, then its lowered view."""
        return self.stepper.net

    def _model(self, given: fx.GraphModule | None, ckpt: dict[str, Any] | None) -> fx.GraphModule:
        if given is None:
            # resuming: trust_code is this call's --trust-code or its MODEL being the recorded
            # source (resume_config), never the saved run's
            return (load(ckpt, trust_code=self.cfg.trust_code) if ckpt
                    else build_model(self.cfg, self.data.spec))
        if not ckpt:
            return apply_connectivity(given, self.cfg.connectivity, self.cfg.seed)
        given.load_state_dict(ckpt["state_dict"])
        for m in mask_modules(given):
            m.mask.requires_grad_(not m.is_frozen)
        return given

    def _loader(self, split: str, epoch: int):
        cfg, d, train = self.cfg, self.dist, split == "train"
        return make_loader(self.data, split, cfg.batch_size if train else cfg.eval_batch_size,
                           shuffle=train, augment=train and cfg.augment, drop_last=train,
                           epoch=epoch,
                           max_samples=cfg.max_train_samples if train else cfg.max_test_samples,
                           seed=cfg.seed, rank=d.rank, world_size=d.world_size, device=self.device)

    def _write_config(self) -> None:
        info = {**self.cfg.to_dict(), "device": str(self.device),
                "world_size": self.dist.world_size,
                "steps_per_epoch": self.steps_per_epoch, "freeze_step": self.freeze_step,
                "channels_last": self.channels_last, "amp": self.amp,
                "amp_dtype": str(self.stepper.dtype).removeprefix("torch.") if self.amp else None,
                "cuda_graph": self.stepper.captures,
                "data_spec": dataclasses.asdict(self.data.spec),
                "machine": machine_info(self.device),
                "rewrite": graph_meta.rewrite_record(self.model)}
        rundir.write_config(self.out, info, WHERE)
        rundir.start_metrics(self.out, WHERE)

    def restore(self, t: dict[str, Any]) -> None:
        """Optimizer, schedule, scaler, position and RNG state of a saved run."""
        self.opt.load_state_dict(t["optimizer"])
        self.stepper.after_restore()
        self.sched.load_state_dict(t["scheduler"])
        if self.amp and t["scaler"]:          # a CPU run's disabled scaler has an empty state
            self.scaler.load_state_dict(t["scaler"])
        self.epoch, self.batch0, self.step = t["epoch"], t["batch"], t["step"]
        self.best = t["best_acc"] if t["best_acc"] is not None and t["best_acc"] >= 0 else None
        self.best_val, self.best_epoch = t.get("best_val_acc"), t.get("best_epoch", 0)
        self.freeze_stats = t.get("freeze_stats")
        if self.dist.main:                  # saved summed over ranks: rank 0 carries them on
            self.partial = [float(v) for v in t.get("epoch_partial", self.partial)]
        self.epoch_chosen = t.get("epoch_chosen")
        self.pending = t.get("overrides")
        self.good = f"{self.out / 'last.pt'} ({position(t['epoch'], t['batch'], t['step'])})"
        if self.dist.main:
            rundir.trim_metrics(self.out, self.epoch, WHERE)
        set_rng_state(t["rng"])

    def change_settings(self, changes: Changes) -> None:
        """A resume's new learning rates (or save_every): applied, announced and recorded."""
        set_base_lrs(self.opt, self.sched, {GROUPS[k]: new for k, (_, new) in changes.items()
                                            if k in GROUPS})
        self.pending = merge_pending(self.pending, changes, self.step)
        if self.dist.main:
            print(f"train: resuming {self.out / 'last.pt'} at "
                  f"{position(self.epoch, self.batch0, self.step)} with changed settings: "
                  f"{describe_changes(changes)}", file=sys.stderr, flush=True)
            record_changes(self.out, changes, self.step, self.epoch + 1)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        t0 = time.perf_counter()
        with StopFlag() as self.stop:
            while self.epoch < self.cfg.epochs and self.stopped == "done":
                before = self.epoch_chosen = self.epoch_chosen or chosen_sets(self.model)
                sums, seconds = self.train_epoch(self.stop)
                if self.stopped == "max_steps":
                    break
                self.end_epoch(before, sums, seconds)
                if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps \
                        and self.epoch < self.cfg.epochs:
                    self.stopped = "max_steps"
        D.barrier(self.dist)
        return TrainResult(str(self.out), self.epoch, self.step, self.best, self.last_acc,
                           time.perf_counter() - t0, self.stopped, self.history, self.best_val,
                           self.best_epoch)

    def train_epoch(self, stop: "StopFlag") -> tuple[list[float], float]:
        """The rest of the current epoch; returns [loss sum, correct, seen] and its seconds
        (a resumed epoch includes what it had done before the stop)."""
        loader = self._loader("train", self.epoch)
        masks = self._mask_batches(self.epoch)
        self.net.train()
        sums, t0 = self.partial[:3], time.perf_counter() - self.partial[3]
        self.partial = [0.0, 0.0, 0.0, 0.0]
        bar = self._bar(len(loader))
        b = self.batch0
        batches = itertools.islice(iter(loader), self.batch0, None)
        for b, (x, y) in enumerate(batches, start=self.batch0):
            self.maybe_freeze()
            mb = next(masks) if masks is not None else None
            loss, logits, stopping = self.train_step(x, y, stop.set, mb if self.learning else None)
            self.last_loss = float(loss)
            correct = float((logits.argmax(1) == y).sum())
            sums = [sums[0] + self.last_loss * y.numel(), sums[1] + correct, sums[2] + y.numel()]
            bar.update(1)
            rate = sums[2] * self.dist.world_size / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{100 * sums[1] / sums[2]:.1f}",
                            img_s=f"{rate:.0f}",
                            refresh=False)          # a forced refresh would ignore mininterval
            if stopping:
                bar.close()
                self.save("last.pt", self.epoch, b + 1, self._partial(sums, t0))
                why = stop.reason or "a stop request on another rank"
                raise Interrupted(WHERE, f"interrupted by {why} at epoch {self.epoch + 1}, step "
                                         f"{self.step}; state saved to {self.out / 'last.pt'}; "
                                         "continue with resume=True", "resume")
            if (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps
                    and b + 1 < len(loader)):
                self.stopped = "max_steps"
                self.save("last.pt", self.epoch, b + 1, self._partial(sums, t0))
                break
            if self.cfg.save_every and self.step % self.cfg.save_every == 0 and b + 1 < len(loader):
                self.save("last.pt", self.epoch, b + 1, self._partial(sums, t0))  # as a stop would
        bar.close()
        return sums, time.perf_counter() - t0

    def _partial(self, sums: list[float], t0: float) -> list[float]:
        """This epoch so far, summed over ranks (every rank stops at the same step)."""
        return D.all_sum(sums, self.dist, self.device) + [time.perf_counter() - t0]

    def _mask_batches(self, epoch: int):
        """``mask_batches='other'``: the batches the masks learn from, batch b of an epoch drawn
        from another shuffle of the training images (so a resumed run draws the same); None
        otherwise, or once the masks no longer learn."""
        if self.cfg.mask_batches != "other" or not self.learning:
            return None
        cfg, d = self.cfg, self.dist
        it = iter(make_loader(self.data, "train", cfg.batch_size, shuffle=True, augment=cfg.augment,
                              drop_last=True, epoch=epoch, seed=cfg.seed + 7919,
                              max_samples=cfg.max_train_samples, rank=d.rank,
                              world_size=d.world_size, device=self.device))
        return itertools.chain(itertools.islice(it, self.batch0, None), itertools.repeat(None))

    def train_step(self, x: torch.Tensor, y: torch.Tensor, stop_asked: bool,
                   mask_batch: tuple[torch.Tensor, torch.Tensor] | None = None):
        """One optimizer step; returns (loss, logits, whether every rank agreed to stop)."""
        if self.learning and self.cfg.mask_anneal:   # toward the top-K as the freeze nears
            progress = self.step / max(1, self.freeze_step)
            set_temperature(self.model, max(ANNEAL_FLOOR, 1.0 - progress))
        def check(loss: torch.Tensor) -> bool:
            asked = stop_asked or bool(self.stop and self.stop.set)     # a signal in this step
            bad, stopping = D.agree(self.dist, self.device, not bool(torch.isfinite(loss)), asked)
            if bad:   # every rank stops together; last.pt keeps the last good state
                raise self.diverged(f"loss is not finite ({float(loss.detach())}) at epoch "
                                    f"{self.epoch + 1}, step {self.step + 1}")
            return stopping
        loss, logits, stopping = self.stepper.step(x, y, check, mask_batch)
        self.sched.step()
        self.step += 1
        return loss, logits, stopping

    def check_finite(self) -> None:
        params = [p.detach() for p in self.model.parameters()]
        params += [b for b in self.model.buffers() if b.is_floating_point()]   # BN statistics
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise self.diverged(f"weights are not finite after step {self.step} (its loss "
                                f"{self.last_loss})")

    def diverged(self, what: str) -> McGraphError:
        """The one-line stop of a run whose loss or weights are no longer finite."""
        if self.good:
            return McGraphError(WHERE, f"{what}; last good checkpoint: {self.good}: continue it "
                                       "with resume=True and a lower lr or mask_lr",
                                ("resume", "lr", "mask_lr"))
        return McGraphError(WHERE, f"{what}; no checkpoint of this run yet: start it again with "
                                   "a lower lr or mask_lr", ("lr", "mask_lr"))

    def save(self, name: str, epoch: int, batch: int, partial: list[float] | None = None) -> None:
        """Write a checkpoint (rank 0), never of non-finite weights (every rank checks: the
        weights are the same on all)."""
        self.check_finite()
        self.stepper.sync_host()
        if self.dist.main:
            save_training(self.out / name, self.model, self.opt, self.sched, self.scaler,
                          epoch=epoch, batch=batch, step=self.step, best_acc=self.best,
                          config=self.cfg.to_dict(),
                          epoch_partial=partial or [0.0, 0.0, 0.0, 0.0],
                          epoch_chosen=self.epoch_chosen if partial else None,
                          best_val_acc=self.best_val, best_epoch=self.best_epoch,
                          freeze_stats=self.freeze_stats, overrides=self.pending,
                          data_spec=dataclasses.asdict(self.data.spec),   # the ONNX contract
                          init_weights=self.init_weights)
        if name == "last.pt":
            self.good = f"{self.out / name} ({position(epoch, batch, self.step)})"

    def _bar(self, total: int) -> tqdm:
        return tqdm(total=total, initial=self.batch0,
                    disable=not (self.cfg.progress and self.dist.main),
                    desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", unit="batch", leave=False,
                    dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
