"""Configs: frozen dataclasses, each the single source of its defaults, validated on creation.

The CLI derives its options' defaults and choices from these (:func:`default`, :func:`choices`)
and only turns options into a config before calling the library.
"""
from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

from .errors import McGraphError
from .masks import Aggregate, Init, MaskGrad

Level = Literal["auto", "module", "branch"]
Precision = Literal["fp32", "fp16", "int8"]
Int8Scheme = Literal["u8s8", "s8s8"]


MISSING_DEFAULT = MISSING


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (one place for every default);
    ``MISSING_DEFAULT`` for a required field."""
    f = cls.__dataclass_fields__[name]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:          # type: ignore[misc]
        return f.default_factory()                # type: ignore[misc]
    return MISSING


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` field (``Literal[...] | None``: the same); () if none."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is not Literal:
        hint = next((a for a in typing.get_args(hint) if typing.get_origin(a) is Literal), None)
    return tuple(typing.get_args(hint)) if hint is not None else ()


def validate_literals(cfg: Any, where: str) -> None:
    """Every ``Literal`` field of ``cfg`` holds one of its values (None where the field allows)."""
    for f in fields(cfg):
        allowed, value = choices(type(cfg), f.name), getattr(cfg, f.name)
        if allowed and value not in allowed and value is not None:
            raise McGraphError(where,
                               f"{f.name} must be one of {', '.join(allowed)}, got '{value}'",
                               f.name)


def check(ok: bool, where: str, option: str, message: str) -> None:
    if not ok:
        raise McGraphError(where, f"{option} {message}", option)


ModelArgs = tuple[tuple[str, Any], ...]


def model_args_tuple(args: Any, where: str) -> ModelArgs:
    """Model arguments as a config holds them: ``(("width", 8), ...)`` in the given order, from
    a mapping or from pairs (a config read back from JSON holds lists)."""
    items = args.items() if isinstance(args, Mapping) else (args or ())
    try:
        pairs = tuple((str(k), v) for k, v in items)
    except (TypeError, ValueError):
        raise McGraphError(where, "model_args must be a mapping or (name, value) pairs, "
                                  f"got {args!r}") from None
    return pairs


@dataclass(frozen=True)
class RewriteConfig:
    model: str
    fan_in: int
    out: str
    init: Init = "uniform"
    num_classes: int | None = None              # None: the source's own (a registered name: 10)
    in_channels: int | None = None              # None: the source's own (a registered name: 3)
    input_size: tuple[int, int] | None = None   # None: the model's default (32x32 CIFAR, 224x224)
    model_args: ModelArgs = ()                   # keyword arguments of the source's factory
    seed: int = 0
    weights: str | None = None
    modules: tuple[str, ...] | None = None       # block type names or qualified names
    mask_grad: MaskGrad = "normalized"           # see KHotMask
    aggregate: Aggregate = "mean"                # see MaskConnect
    level: Level = "auto"                        # module | branch | auto (branch for ResNeXt)

    def __post_init__(self) -> None:
        validate_literals(self, "rewrite")
        check(self.fan_in >= 1, "rewrite", "fan_in", f"(K) must be >= 1, got {self.fan_in}")
        for name in ("num_classes", "in_channels"):
            v = getattr(self, name)
            check(v is None or v >= 1, "rewrite", name, f"must be >= 1, got {v}")
        object.__setattr__(self, "model_args", model_args_tuple(self.model_args, "rewrite"))


@dataclass(frozen=True)
class CompileConfig:
    checkpoint: str
    out: str
    report: str | None = None
    verify: bool = True
    opset: int = 18
    batch_sizes: tuple[int, ...] = (1, 4)       # onnxruntime is checked at each
    tolerance: float = 1e-4                      # relative to the output scale (docs/design.md §1)
    precision: Precision = "fp32"                # of the file written; fp32 is exported first
    data: str | None = None                      # int8 calibration (training split) and top-1
    data_dir: str | None = None                  # (test split); None: no top-1
    calib_images: int = 512                      # int8: a seeded random subset of training images
    calib_seed: int = 0
    per_channel: bool = True                     # int8: a weight scale per output channel
    int8_scheme: Int8Scheme = "u8s8"             # uint8 activations, 7-bit weights (see precision)
    eval_images: int | None = None               # top-1 on the first N test images (None: all)
    fp16_tolerance: float = 2e-2                 # fp16 (reference evaluator) vs fp32, as above
    trust_code: bool = False                     # rebuild a file/module source (runs its code)

    def __post_init__(self) -> None:
        validate_literals(self, "compile")
        if self.precision == "int8" and not self.data:
            raise McGraphError("compile", "precision int8 needs data: its calibration images "
                                          "come from that data set's training split",
                               ("precision", "data"))
        check(self.calib_images >= 1, "compile", "calib_images",
              f"must be >= 1, got {self.calib_images}")
        check(self.eval_images is None or self.eval_images >= 1, "compile", "eval_images",
              f"must be >= 1, got {self.eval_images}")
        check(self.fp16_tolerance > 0, "compile", "fp16_tolerance",
              f"must be > 0, got {self.fp16_tolerance}")
        check(self.opset >= 18, "compile", "opset", f"must be >= 18, got {self.opset}")
        check(bool(self.batch_sizes) and min(self.batch_sizes) >= 1, "compile", "batch_sizes",
              f"must be positive, got {self.batch_sizes}")
        check(self.tolerance > 0, "compile", "tolerance", f"must be > 0, got {self.tolerance}")
