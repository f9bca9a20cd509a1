"""Accuracy of a checkpoint in PyTorch or of an ONNX file in onnxruntime, on a data set's test
split.

Never a silently wrong number: a model whose class count or input size is not the data set's is
refused in one line (its labels would index other classes' logits), and a model trained with
another normalization than the loader's for this data set, or other class names, gets one
warning line (``res["warnings"]``). Top-1 and top-5 follow :mod:`mcgraph.accuracy`.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import torch

from . import deploy, graph_meta
from .accuracy import check_classes, count_correct, percent
from .datainfo import DataInfo, class_names, same_normalization
from .errors import McGraphError

WHERE = "eval"


def evaluate_path(path: str, data: str, data_dir: str | None = None, batch_size: int = 500,
                  device: str = "auto", max_samples: int | None = None,
                  trust_code: bool = False) -> dict[str, Any]:
    """Top-1 (and top-5 past 10 classes), in percent, on ``data``'s test split; ``trust_code``
    lets a checkpoint whose model is a file or module source be rebuilt (see
    :func:`mcgraph.load`)."""
    from .train.data import load_data
    ds = load_data(data, data_dir)
    t0 = time.perf_counter()
    if Path(path).suffix == ".onnx":
        res = _evaluate_onnx(path, ds, batch_size, device, max_samples)
    else:
        res = _evaluate_checkpoint(path, ds, batch_size, device, max_samples, trust_code)
    images, warnings = res.pop("images"), res.pop("warnings")
    res.update({"data": ds.spec.name, "images": images,
                "seconds": round(time.perf_counter() - t0, 2)})
    if warnings:
        res["warnings"] = warnings
    return res


def _evaluate_onnx(path: str, ds: Any, batch_size: int, device: str,
                   max_samples: int | None) -> dict[str, Any]:
    from .export import decode_metadata
    from .train.data import make_loader
    spec = ds.spec
    want = [spec.in_channels, *spec.input_size]
    sess = deploy.make_session(path, device=device)
    meta = decode_metadata(sess.get_modelmeta().custom_metadata_map, path)
    shape = sess.get_inputs()[0].shape
    if list(shape[1:]) != want:
        raise McGraphError(WHERE, f"{path} expects inputs {shape[1:]}, {spec.name} has {want}")
    if "input_size" in meta and [meta.get("input_channels"), *meta["input_size"]] != want:
        raise McGraphError(WHERE, f"{path} was exported for inputs "
                                  f"{[meta.get('input_channels'), *meta['input_size']]}, "
                                  f"{spec.name} has {want}")
    out_shape = sess.get_outputs()[0].shape
    static = out_shape[1] if out_shape is not None and len(out_shape) == 2 else None
    check_classes(WHERE, path, static, spec.name, spec.num_classes)
    check_classes(WHERE, path, meta.get("num_classes"), spec.name, spec.num_classes)
    trained = DataInfo(name=meta.get("dataset", "?"), mean=meta.get("mean"), std=meta.get("std"),
                       class_names=meta.get("class_names"))
    warnings = data_warnings(path, trained, spec)
    sums = [0, 0, 0]
    for x, y in make_loader(ds, "test", batch_size, shuffle=False, augment=False,
                            max_samples=max_samples):
        logits = deploy.run(sess, x)
        if logits.ndim != 2:         # checked on what it computes: shapes in a file can be absent
            raise McGraphError(WHERE, f"{path} outputs shape {list(logits.shape)}, not "
                                      f"(batch, classes)")
        check_classes(WHERE, path, logits.shape[1], spec.name, spec.num_classes)  # symbolic axis
        sums = [a + b for a, b in zip(sums, count_correct(logits, y))]
    res: dict[str, Any] = {"model": path, "runtime": "onnxruntime",
                           "provider": sess.get_providers()[0], "acc": percent(sums[0], sums[2])}
    if spec.num_classes > 10:
        res["top5"] = percent(sums[1], sums[2])
    return {**res, "images": sums[2], "warnings": warnings}


def _evaluate_checkpoint(path: str, ds: Any, batch_size: int, device: str,
                         max_samples: int | None, trust_code: bool) -> dict[str, Any]:
    from .api import load
    from .checkpoint import read_checkpoint
    from .config import default
    from .datainfo import checkpoint_data
    from .device import resolve_device
    from .masks import mask_modules
    from .train.config import TrainConfig
    from .train.data import make_loader
    from .train.metrics import evaluate, recalibrate_bn
    spec = ds.spec
    want = [spec.in_channels, *spec.input_size]
    ckpt = read_checkpoint(path)
    model = load(ckpt, trust_code=trust_code)         # validates the description first
    record = graph_meta.rewrite_record(model, "eval")
    if list(record["input_shape"]) != want:
        raise McGraphError(WHERE, f"{path} expects inputs {record['input_shape']}, {spec.name} "
                                  f"has {want}")
    classes = record["model_kwargs"].get("num_classes")
    if classes is None:          # a head mcgraph could not read: ask the model
        with torch.no_grad():
            classes = int(model.eval()(torch.zeros(1, *want)).shape[-1])
    check_classes(WHERE, path, classes, spec.name, spec.num_classes)
    # the loader's spec for this data set is known: no need to load the training data set again
    warnings = data_warnings(path, checkpoint_data(ckpt, path, load=False), spec)
    dev = resolve_device(device, WHERE)
    model = model.to(dev).eval()
    learning = any(not m.is_frozen for m in mask_modules(model))
    if learning:   # BN statistics of the top-K wiring, as the trainer's per-epoch eval
        n, bs = default(TrainConfig, "bn_recalibration_batches"), default(TrainConfig, "batch_size")
        calib = make_loader(ds, "train", bs, shuffle=True, augment=False, device=dev)
        model = recalibrate_bn(model, itertools.islice(iter(calib), n))
    m = evaluate(model, make_loader(ds, "test", batch_size, shuffle=False, augment=False,
                                    device=dev, max_samples=max_samples), spec.num_classes)
    res: dict[str, Any] = {"model": path, "runtime": "pytorch", "device": str(dev),
                           "acc": m["acc"], "bn_recalibrated": learning}
    if "top5" in m:
        res["top5"] = m["top5"]
    return {**res, "images": int(m["sums"][2]), "warnings": warnings}


def data_warnings(model: str, trained: DataInfo | None, spec: Any) -> list[str]:
    """One line per way the data the model was trained on differs from what the loader feeds
    it here. A warning, not a refusal: the accuracy is right for the inputs the loader makes,
    and evaluating on another data set of the same shape and classes is a fair question; it is
    just not what a pipeline applying the model's own normalization would see. Unknown on either
    side (a checkpoint of ``mcgraph rewrite``, a file without metadata): nothing to say."""
    if trained is None:
        return []
    out = []
    if same_normalization(trained.mean, trained.std, spec.mean, spec.std) is False:
        out.append(f"{model} was trained on {trained.name} normalized with mean "
                   f"{_short(trained.mean)} std {_short(trained.std)}; the {spec.name} loader "
                   f"normalizes with mean {_short(spec.mean)} std {_short(spec.std)}")
    here = class_names(spec.name, spec.num_classes)
    if trained.class_names is not None and here is not None and \
            list(trained.class_names) != list(here):
        out.append(f"{model}'s class names ({', '.join(trained.class_names[:3])}, ...) are not "
                   f"{spec.name}'s ({', '.join(here[:3])}, ...)")
    return out


def _short(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"
