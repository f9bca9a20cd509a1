"""Accuracy of a checkpoint in PyTorch or of an ONNX file in onnxruntime, on a data set's test split."""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import deploy
from .errors import McGraphError


def evaluate_path(path: str, data: str, data_dir: str | None = None, batch_size: int = 500,
                  device: str = "auto", max_samples: int | None = None,
                  trust_code: bool = False) -> dict[str, Any]:
    """Top-1 (and top-5 past 10 classes) on ``data``'s test split; ``trust_code`` lets a
    checkpoint whose model is a file or module source be rebuilt (see :func:`mcgraph.load`)."""
    from .device import resolve_device
    from .train.data import load_data, make_loader
    ds = load_data(data, data_dir)
    spec = ds.spec
    want = (spec.in_channels, *spec.input_size)
    t0 = time.perf_counter()
    if Path(path).suffix == ".onnx":
        sess = deploy.make_session(path, device=device)
        shape = sess.get_inputs()[0].shape
        if list(shape[1:]) != list(want):
            raise McGraphError("eval", f"{path} expects inputs {shape[1:]}, {spec.name} has {list(want)}")
        correct1 = correct5 = total = 0
        for x, y in make_loader(ds, "test", batch_size, shuffle=False, augment=False,
                                max_samples=max_samples):
            logits = deploy.run(sess, x)
            top = np.argsort(-logits, axis=1)[:, :5]
            yy = y.numpy()
            correct1 += int((top[:, 0] == yy).sum())
            correct5 += int((top == yy[:, None]).any(axis=1).sum())
            total += len(yy)
        res: dict[str, Any] = {"model": path, "runtime": "onnxruntime",
                               "provider": sess.get_providers()[0], "acc": 100.0 * correct1 / total}
        if spec.num_classes > 10:
            res["top5"] = 100.0 * correct5 / total
    else:
        from .api import load
        from .config import default
        from .masks import mask_modules
        from .train.config import TrainConfig
        from .train.metrics import evaluate, recalibrate_bn
        dev = resolve_device(device, "eval")
        model = load(path, trust_code=trust_code)
        shape = model.meta["mcgraph"]["rewrite"]["input_shape"]
        if list(shape) != list(want):
            raise McGraphError("eval", f"{path} expects inputs {shape}, {spec.name} has {list(want)}")
        model = model.to(dev).eval()
        learning = any(not m.is_frozen for m in mask_modules(model))
        if learning:   # BN statistics of the top-K wiring, as the trainer's per-epoch eval
            n, bs = default(TrainConfig, "bn_recalibration_batches"), default(TrainConfig, "batch_size")
            calib = make_loader(ds, "train", bs, shuffle=True, augment=False, device=dev)
            model = recalibrate_bn(model, itertools.islice(iter(calib), n))
        m = evaluate(model, make_loader(ds, "test", batch_size, shuffle=False, augment=False,
                                        device=dev, max_samples=max_samples), spec.num_classes)
        res = {"model": path, "runtime": "pytorch", "device": str(dev), "acc": m["acc"],
               "bn_recalibrated": learning}
        if "top5" in m:
            res["top5"] = m["top5"]
        total = min(spec.test_size, max_samples or spec.test_size)
    res.update({"data": spec.name, "images": total, "seconds": round(time.perf_counter() - t0, 2)})
    return res
