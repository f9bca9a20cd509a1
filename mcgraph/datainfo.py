"""What an exported model says about its data: the data set, the normalization mcgraph's loader
applied in training, and the class names.

    info = checkpoint_data("runs/r20/best.pt")     # None for a checkpoint of `mcgraph rewrite`
    export_onnx(slim, "model.onnx", (1, 28, 28), data=info)

A checkpoint written by ``mcgraph train`` records its TrainConfig (data set name and directory);
the run's ``config.json`` beside it records the data set's spec as the loader used it (mean and
std included, which for ``synthetic`` are measured, not constants). A checkpoint of ``mcgraph
rewrite`` never saw data: it gets no DataInfo, and nothing about normalization is invented.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import McGraphError

# what mcgraph's loader (train/data.py Loader.__iter__) computes from uint8 pixels, per channel
NORMALIZATION = "(pixel / 255 - mean) / std"

FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
CLASS_NAMES: dict[str, tuple[str, ...]] = {"fashion-mnist": FASHION_MNIST, "cifar10": CIFAR10,
                                           "cifar100": CIFAR100}


@dataclass(frozen=True)
class DataInfo:
    """A data set as an exported model records it; None where it is not known."""
    name: str
    num_classes: int | None = None
    in_channels: int | None = None
    input_size: tuple[int, int] | None = None      # (H, W)
    mean: tuple[float, ...] | None = None          # per channel, of pixel / 255
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None     # index i: the name of label i

    @classmethod
    def from_spec(cls, spec: Any) -> DataInfo:
        """From a :class:`mcgraph.train.data.DataSpec`, or the dict of one (``config.json``'s
        ``data_spec``; fields it lacks stay unknown)."""
        d = spec if isinstance(spec, Mapping) else vars(spec)
        if not d.get("name"):
            raise McGraphError("export", f"a data description needs a name, got {dict(d)!r}")
        n = int(d["num_classes"]) if d.get("num_classes") is not None else None
        size = d.get("input_size")
        h, w = (int(s) for s in size) if size else (None, None)
        return cls(name=str(d["name"]), num_classes=n, in_channels=d.get("in_channels"),
                   input_size=(h, w) if size else None,  # type: ignore[arg-type]
                   mean=_floats(d.get("mean")), std=_floats(d.get("std")),
                   class_names=(tuple(d["class_names"]) if d.get("class_names")
                                else class_names(str(d["name"]), n)))


def _floats(v: Any) -> tuple[float, ...] | None:
    return tuple(float(x) for x in v) if v is not None else None


def class_names(name: str, num_classes: int | None = None) -> tuple[str, ...] | None:
    """The class names of data set ``name`` where they are known: the standard lists of
    Fashion-MNIST and CIFAR, the class folders of an ``imagefolder:DIR`` (sorted, as
    torchvision's ImageFolder numbers them). None if unknown or not ``num_classes`` long."""
    names = CLASS_NAMES.get(name.strip().lower())
    if name.startswith("imagefolder:"):
        train = Path(name.split(":", 1)[1]) / "train"
        if train.is_dir():
            names = tuple(sorted(e.name for e in os.scandir(train) if e.is_dir()))
    if names is None or (num_classes is not None and len(names) != num_classes):
        return None
    return tuple(names)


def checkpoint_data(checkpoint: str | os.PathLike | dict[str, Any],
                    path: str | os.PathLike | None = None, load: bool = True) -> DataInfo | None:
    """The data set a checkpoint's model was trained on, as mcgraph's loader normalized it.

    ``checkpoint``: a path, or a checkpoint already read (then ``path`` locates the run's
    ``config.json``). None for a checkpoint without a training record. The spec comes from the
    training record itself if it holds one, else from the run's ``config.json`` when that run
    used the same data set, else (``load``) from loading the data set; a data set that cannot be
    loaded here leaves only its name (the normalization stays unknown)."""
    from .checkpoint import read_checkpoint
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        ckpt, path = read_checkpoint(checkpoint), path or checkpoint
    train = ckpt.get("train")
    cfg = train.get("config") if isinstance(train, dict) else None
    if not isinstance(cfg, dict) or not cfg.get("data"):
        return None
    spec = train.get("data_spec") if isinstance(train, dict) else None
    if spec is None and path is not None:
        spec = _run_config_spec(Path(path).parent, cfg)
    if spec is None and load:
        from .train.data import load_data
        try:
            spec = load_data(cfg["data"], cfg.get("data_dir")).spec
        except McGraphError:      # the data is not here: what the record says is all we know
            spec = None
    return DataInfo.from_spec(spec) if spec is not None else DataInfo(name=str(cfg["data"]))


def _run_config_spec(run_dir: Path, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``data_spec`` of the run's ``config.json`` in ``run_dir``, if that run trained on
    ``cfg``'s data (a directory reused for another data set rewrites config.json; its spec is
    not this checkpoint's)."""
    from .rundir import read_config
    try:
        info = read_config(run_dir, "export")
    except McGraphError:      # unreadable: as if there were none
        return None
    if not info or not isinstance(info.get("data_spec"), dict):
        return None
    if (info.get("data"), info.get("data_dir")) != (cfg.get("data"), cfg.get("data_dir")):
        return None
    return info["data_spec"]


def same_normalization(a_mean: Any, a_std: Any, b_mean: Any, b_std: Any) -> bool | None:
    """Whether two (mean, std) pairs normalize alike (None: one of them is unknown). A single
    value stands for every channel, as the loader broadcasts it."""
    if None in (a_mean, a_std, b_mean, b_std):
        return None
    pairs = [(list(a_mean), list(b_mean)), (list(a_std), list(b_std))]
    for a, b in pairs:
        n = max(len(a), len(b))
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        if len(a) != len(b) or not all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
                                       for x, y in zip(a, b)):
            return False
    return True
