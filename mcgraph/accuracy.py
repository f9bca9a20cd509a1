"""One rule for counting correct predictions, used by every path that reports accuracy.

    c1, c5, n = count_correct(logits, labels)        # torch tensors or numpy arrays
    percent(c1, n)                                    # 0..100

The prediction is the *first* index of the largest logit, as ``torch.argmax`` and
``numpy.argmax`` pick it. ``topk`` and ``argsort`` leave the order of equal logits unspecified
(it changed with the device and the sort algorithm), so tied logits - frequent in bfloat16,
fp16 and int8 - used to be counted differently by the trainer, ``mcgraph eval`` and the compile
report. Top-k extends the same order: a label is within the top k when fewer than k classes come
before it, a class coming before it when its logit is larger, or equal with a smaller index.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import McGraphError

Array = torch.Tensor | np.ndarray


def _tensor(a: Array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


def predictions(logits: Array) -> torch.Tensor:
    """The predicted class of each row: the first index of its largest logit."""
    return _tensor(logits).argmax(dim=1)


def count_correct(logits: Array, labels: Array, k: int = 5) -> tuple[int, int, int]:
    """(top-1 correct, top-``k`` correct, rows) of a batch, by the module's rule."""
    logits, labels = _tensor(logits), _tensor(labels).to(torch.int64)
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise McGraphError("accuracy", f"expected logits (N, classes) and N labels, got "
                                       f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    labels = labels.to(logits.device)
    classes = logits.shape[1]
    outside = (labels < 0) | (labels >= classes)
    own = logits.gather(1, labels.clamp(0, max(classes - 1, 0))[:, None])
    index = torch.arange(classes, device=logits.device)[None, :]
    ahead = (logits > own) | ((logits == own) & (index < labels[:, None]))
    # one device sync per batch, not one per count
    correct1, correctk, bad = torch.stack([(logits.argmax(dim=1) == labels).sum(),
                                           (ahead.sum(dim=1) < k).sum(), outside.sum()]).tolist()
    if bad:
        raise McGraphError("accuracy", f"{bad} labels do not index the {classes} logits")
    return correct1, correctk, int(labels.numel())


def percent(count: float, total: float) -> float:
    """``count`` of ``total`` in percent (0 for an empty total)."""
    return 100.0 * count / total if total else 0.0


def check_classes(where: str, model: str, classes: object, data_name: str,
                  data_classes: int) -> None:
    """Refuse a model whose number of outputs is not the data set's number of classes: labels
    would index other classes' logits and the accuracy would mean nothing. ``classes`` not an
    int (a symbolic ONNX dimension, an unknown head): not checked here."""
    if isinstance(classes, int) and classes != data_classes:
        raise McGraphError(where, f"{model} has {classes} classes, data set {data_name} has "
                                  f"{data_classes}")
