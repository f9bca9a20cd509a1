"""The end of an epoch: evaluation (with BatchNorm re-estimated for the eval wiring while masks
learn), the metrics row, best.pt and last.pt. A mixin of :class:`mcgraph.train.loop.Trainer`."""
from __future__ import annotations

import itertools

from tqdm import tqdm

from .. import rundir
from ..masks import mask_modules
from . import distributed as D
from .data import make_loader
from .metrics import chosen_changed, chosen_sets, evaluate, mask_entropy, recalibrate_bn, summarize

WHERE = "train"


class EpochEnd:
    """``end_epoch`` and ``evaluate``; see the module docstring."""

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Validation and test metrics of the eval (top-K) wiring, summed over ranks. While masks
        learn, on a copy whose BatchNorm statistics were re-estimated for that wiring."""
        self.stepper.sync_host()
        net, n = self.net, self.cfg.bn_recalibration_batches
        dtype = self.stepper.dtype
        if self.learning and n:
            calib = make_loader(self.data, "train", self.cfg.batch_size, shuffle=True,
                                augment=False, seed=self.cfg.seed,
                                device=self.device)    # the same on every rank
            net = recalibrate_bn(self.model, itertools.islice(iter(calib), n), self.amp,
                                 self.channels_last, dtype)
        out = {}
        for split in ("val", "test") if self.data.val is not None else ("test",):
            m = evaluate(net, self._loader(split, 0), self.data.spec.num_classes, self.amp,
                         self.channels_last, dtype)
            out[split] = summarize(D.all_sum(m["sums"], self.dist, self.device),
                                   self.data.spec.num_classes)
        return out

    def end_epoch(self, before: dict, sums: list[float], seconds: float) -> None:
        """Evaluate, log a metrics row, save best.pt (best validation accuracy; without a
        validation split, the latest epoch) and last.pt, move to the next epoch."""
        D.sync_batchnorm_buffers(self.model, self.dist)
        tr, ev = D.all_sum(sums, self.dist, self.device), self.evaluate()
        test, val = ev["test"], ev.get("val")
        self.last_acc = test["acc"]
        row = {"epoch": self.epoch + 1, "step": self.step, "train_loss": tr[0] / max(tr[2], 1),
               "train_acc": 100 * tr[1] / max(tr[2], 1),
               **({"val_acc": val["acc"], "val_loss": val["loss"]} if val else {}),
               "test_acc": test["acc"],
               "test_loss": test["loss"], **({"test_top5": test["top5"]} if "top5" in test else {}),
               "lr": self.opt.param_groups[0]["lr"], "mask_lr": self.opt.param_groups[1]["lr"],
               "masks_frozen": all(m.is_frozen for m in mask_modules(self.model)),
               "bn_recalibrated": self.learning and self.cfg.bn_recalibration_batches > 0,
               "mask_entropy": mask_entropy(self.model),
               "chosen_changed": chosen_changed(before, chosen_sets(self.model)),
               "images_per_s": tr[2] / max(seconds, 1e-9), "seconds": seconds}
        if self.freeze_stats and self.freeze_stats.get("epoch") is None:
            self.freeze_stats["epoch"] = self.epoch + 1      # reported once, in this epoch's row
            row["freeze"] = self.freeze_stats
        if self.pending:                   # settings a resume changed in this epoch
            row["overrides"], self.pending = self.pending, None
        self.history.append(row)
        self.epoch, self.batch0, self.epoch_chosen = self.epoch + 1, 0, None
        # every rank computes the same sums, so every rank makes the same choice; an epoch whose
        # masks still learn is no candidate: its checkpoint is not ready to compile
        improved = not self.learning and (val is None or self.best_val is None
                                          or val["acc"] > self.best_val)
        if improved:
            self.best, self.best_val, self.best_epoch = test["acc"], val and val["acc"], self.epoch
        self.check_finite()                # on every rank, before rank 0 alone saves
        if not self.dist.main:
            return
        rundir.append_metrics(self.out, row, WHERE)
        if improved:
            self.save("best.pt", self.epoch, 0)
        self.save("last.pt", self.epoch, 0)
        if self.cfg.progress:
            vtxt = f"val {val['acc']:.2f}%  " if val else ""
            tqdm.write(f"epoch {self.epoch}/{self.cfg.epochs}  loss {row['train_loss']:.3f}  "
                       f"train {row['train_acc']:.1f}%  {vtxt}test {test['acc']:.2f}%  entropy "
                       f"{row['mask_entropy']:.2f}  changed {row['chosen_changed']}  "
                       f"{row['images_per_s']:.0f} img/s")
