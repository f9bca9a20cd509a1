"""The freeze transition of a training run: masks fixed (top-K, or the likeliest chain within a
size target), the why-this-input record, the weights restarted if asked, then the lowered view.
A mixin of :class:`mcgraph.train.loop.Trainer` (it reads the trainer's model, config, stepper)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..mask_ops import freeze_masks, set_temperature
from ..masks import KHotMask
from . import distributed as D
from .build import training_view
from .metrics import freeze_margins, mask_entropy


class FreezeTransition:
    """``maybe_freeze`` at the freeze step; see the module docstring."""

    def maybe_freeze(self) -> None:
        """At ``freeze_step``: fix the masks and fine-tune on the lowered graph from then on."""
        if self.learning and self.step >= self.freeze_step:
            self.check_finite()            # lowering a diverged network fails less clearly
            self.stepper.sync_host()
            self.freeze_stats = {"step": self.step, "mask_entropy": mask_entropy(self.model),
                                 **freeze_margins(self.model), **self.why_at_freeze()}
            self.freeze_to_choice()
            set_temperature(self.model, 1.0)
            self.learning = False
            if self.init_weights is not None:          # the learned wiring, retrained
                self.restart_weights()
            view = training_view(self.model)
            self.stepper.set_net(D.wrap(view, self.dist, self.device,
                                        find_unused=view is self.model))

    def freeze_to_choice(self) -> None:
        """Top-K of every mask, or with a size target the likeliest chain within it (recorded
        in the freeze row: its blocks and MACs fraction)."""
        cfg = self.cfg
        if cfg.target_macs is None and cfg.target_blocks is None:
            freeze_masks(self.model)
            return
        from .. import target
        chain = target.freeze_to_target(self.model, macs=cfg.target_macs, blocks=cfg.target_blocks)
        if self.freeze_stats is not None:
            self.freeze_stats["target"] = {"macs": cfg.target_macs, "blocks": cfg.target_blocks,
                                           "chain_blocks": len(chain),
                                           "macs_fraction": target.fraction(self.model)}

    def restart_weights(self) -> None:
        """``reinit_at_freeze``: the weights (and BatchNorm statistics) back to their values at
        step 0 and the optimizer's momentum cleared; the masks keep their frozen choice."""
        self.model.load_state_dict(self.init_weights, strict=False)
        self.opt.state.clear()
        self.init_weights = None

    def why_at_freeze(self) -> dict[str, Any]:
        """What the masks chose against what the network prefers, at the moment they freeze
        (mcgraph.why): the summary and, per live row, the choice, the best alternative and the
        margin. Rank 0 only; nothing without a validation split or with why_batches 0."""
        if not (self.cfg.why_batches and self.dist.main and self.data.val is not None):
            return {}
        from ..why import why
        r = why(self.model, self.data, batches=self.cfg.why_batches, device=self.device)
        rows = [{"mask": w.mask, "row": w.row, "slot": w.slot, "chosen": w.chosen,
                 "best_other": w.candidates[1 + min(range(len(w.loss) - 1),
                                                    key=lambda i: w.loss[i + 1])],
                 "margin": round(w.margin, 5),
                 "spearman": None if w.spearman is None else round(w.spearman, 4)}
                for w in r.rows]
        return {"why": {**r.summary(), "per_row": rows}}


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state without its masks' entries (their values, draw counters)."""
    skip = tuple(f"{p}." for p, m in model.named_modules() if isinstance(m, KHotMask))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(skip)}
