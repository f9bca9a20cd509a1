"""The validation split: training images held out once, with a fixed seed, for choosing.

    data = split_validation(load_data("fashion-mnist"))     # data.val: 5,000 held-out images
"""
from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Subset

from ..errors import McGraphError
from .data import Data, DataSpec, TensorImageDataset

VAL_SEED = 0x5EED  # one split for every run and seed: runs of a grid select on the same images


def default_val_size(spec: DataSpec) -> int:
    """5,000 for the large sets (Fashion-MNIST, CIFAR), else a tenth of the training images."""
    return 5000 if spec.train_size >= 40000 else spec.train_size // 10


def split_validation(data: Data, size: int | None = None) -> Data:
    """Hold ``size`` training images out as ``data.val`` (None: :func:`default_val_size`; 0:
    no validation split). The split is drawn with a fixed seed, so it is the same for every
    run; a training subset (``max_train_samples``) is then taken from the remaining images."""
    n = len(data.train)
    size = default_val_size(data.spec) if size is None else int(size)
    if size == 0:
        return data
    if not 0 < size < n:
        raise McGraphError("data", f"val_size must be in 0..{n - 1} for {data.spec.name} "
                                   f"({n} training images), got {size}", "val_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    val_idx, train_idx = perm[:size].sort().values, perm[size:].sort().values
    if isinstance(data.train, TensorImageDataset):
        t = data.train
        train, val = (TensorImageDataset(t.images[i], t.labels[i]) for i in (train_idx, val_idx))
    else:
        train, val = Subset(data.train, train_idx.tolist()), Subset(data.train, val_idx.tolist())
    spec = dataclasses.replace(data.spec, train_size=len(train))
    return Data(spec, train, data.test, val)
