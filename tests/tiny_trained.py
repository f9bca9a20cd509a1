"""One small trained checkpoint shared by the precision tests (made once per pytest session):
resnet20 for 1x16x16 inputs, K=1 'prev' masks (the original wiring), its weights trained for 32
SGD steps on the synthetic data set (about 99% test top-1), so that predictions are confident and
top-1 on the synthetic test split means something. A few seconds on 2 idle cores."""
from __future__ import annotations

from pathlib import Path

import torch
from helpers import masked_resnet20

import mcgraph
from mcgraph.masks import mask_modules
from mcgraph.train.data import load_data, make_loader

STEPS, BATCH, LR = 32, 64, 0.1
_made: dict[str, Path] = {}


def trained_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint's path (a session temp directory); trained on the first call only."""
    if "ckpt" not in _made:
        _made["ckpt"] = _train(tmp_path_factory.mktemp("tiny_trained") / "r20.pt")
    return _made["ckpt"]


def _train(path: Path) -> Path:
    torch.manual_seed(0)
    gm = mcgraph.freeze_masks(masked_resnet20(fan_in=1, init="prev"))   # the original wiring
    masks = {id(m.mask) for m in mask_modules(gm)}
    opt = torch.optim.SGD([p for p in gm.parameters() if id(p) not in masks], lr=LR, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    data, step = load_data("synthetic"), 0
    gm.train()
    while step < STEPS:
        for x, y in make_loader(data, "train", BATCH, shuffle=True, augment=False, epoch=step):
            loss = torch.nn.functional.cross_entropy(gm(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == STEPS:
                break
    return mcgraph.save(gm, path)
