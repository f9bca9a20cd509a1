"""Training from Python in one call: learn a network's connectivity on a data set.

    result = mcgraph.fit("resnet20", "fashion-mnist", fan_in=1, epochs=2, out="runs/r20")
    result.best_acc, result.out                     # best.pt is ready for mcgraph.compile

    data = mcgraph.tensor_data(x_train, y_train, x_test, y_test, class_names=names)
    result = mcgraph.fit(my_resnet, data, fan_in=1, epochs=5, out="runs/mine")

``fit`` is :func:`mcgraph.train.loop.train` with the options as keyword arguments (the fields of
:class:`~mcgraph.train.config.TrainConfig`). The model: a model source or a masked checkpoint
(a string), an ``nn.Module`` (rewritten here, with ``fan_in`` and ``init``, for the data's
input), or a masked ``fx.GraphModule`` of :func:`mcgraph.rewrite` (trained in place).
Writing one's own loop instead: docs/training.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx, nn

from .errors import McGraphError
from .masks import mask_modules
from .train.config import TrainConfig
from .train.data import Data, DataSpec, TensorImageDataset, load_data
from .train.loop import TrainResult, train


def tensor_data(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                test_labels: torch.Tensor, *, name: str = "tensors",
                class_names: Sequence[str] | None = None, augment_flip: bool = False,
                crop_padding: int = 0) -> Data:
    """A data set from tensors in memory: images (N, C, H, W), uint8 or floats in [0, 1];
    labels (N,) in 0..classes-1. Normalized by the training images' per-channel mean and std,
    as mcgraph's loader does every data set (and as the exported ONNX file records)."""
    def u8(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
            raise McGraphError("data", "images must be uint8, or floats in [0, 1]")
        return (x * 255).round().to(torch.uint8)
    train = TensorImageDataset(u8(images), labels.long())
    test = TensorImageDataset(u8(test_images), test_labels.long())
    if train.images.shape[1:] != test.images.shape[1:]:
        raise McGraphError("data", f"training images are {tuple(train.images.shape[1:])}, test "
                                   f"images {tuple(test.images.shape[1:])}")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    if class_names is not None and len(class_names) < classes:
        raise McGraphError("data", f"{len(class_names)} class names for {classes} classes")
    classes = len(class_names) if class_names is not None else classes
    px = train.images.double().div(255).transpose(0, 1).reshape(train.images.shape[1], -1)
    spec = DataSpec(name, classes, train.images.shape[1], tuple(train.images.shape[2:]),
                    tuple(px.mean(1).tolist()), tuple(px.std(1).clamp_min(1e-6).tolist()),
                    len(train), len(test), augment_flip, crop_padding,
                    tuple(class_names) if class_names is not None else None)
    return Data(spec, train, test)


def fit(model: str | nn.Module, data: str | Data = "fashion-mnist", *,
        out: str = "runs/fit", **options: Any) -> TrainResult:
    """Train ``model``'s weights and connectivity on ``data`` (a data set name, or a
    :class:`~mcgraph.train.data.Data` such as :func:`tensor_data`'s); ``options`` are
    TrainConfig fields (``fan_in``, ``epochs``, ``connectivity``, ``freeze_at``, ...)."""
    ds = load_data(data, options.get("data_dir")) if isinstance(data, str) else data
    name = data if isinstance(data, str) else ds.spec.name
    if isinstance(model, str):
        return train(TrainConfig(model=model, data=name, out=out, **options), data=ds)
    if not isinstance(model, nn.Module):
        raise McGraphError("fit", f"model must be a model source, a checkpoint or an nn.Module, "
                                  f"got {type(model).__name__}")
    gm = model if isinstance(model, fx.GraphModule) and mask_modules(model) else None
    if gm is None:
        from .api import rewrite
        kw = {k: options[k] for k in ("fan_in", "init", "mask_grad", "aggregate") if k in options}
        kw.setdefault("fan_in", TrainConfig.__dataclass_fields__["fan_in"].default)
        kw.setdefault("init", "uniform")
        gm = rewrite(model, in_channels=ds.spec.in_channels, num_classes=ds.spec.num_classes,
                     input_size=ds.spec.input_size, seed=options.get("seed", 0), **kw)
    options = {k: v for k, v in options.items() if k not in ("init",)}
    return train(TrainConfig(model=type(model).__name__, data=name, out=out, **options),
                 data=ds, model=gm)
