"""Training configuration: a frozen dataclass the CLI fills and the trainer reads."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CONNECTIVITY = ("learned", "fixed-prev", "fixed-full", "fixed-random")


@dataclass(frozen=True)
class TrainConfig:
    model: str                          # registered name (rewritten on the fly) or a masked .pt
    data: str = "fashion-mnist"         # fashion-mnist | cifar10 | cifar100 | imagefolder:DIR | synthetic
    data_dir: str | None = None
    out: str = "runs/default"
    fan_in: int = 2                     # K, for a model given by name
    init: str | None = None             # None: 'uniform' when learned, else the rule's own
    connectivity: str = "learned"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1                     # weights: SGD, Nesterov momentum
    momentum: float = 0.9
    weight_decay: float = 5e-4          # weights only, never the masks
    schedule: str = "cosine"            # cosine | step (x0.1 at 50% and 75% of the steps)
    warmup_steps: int = 0
    mask_lr: float = 0.05               # masks: plain SGD, no momentum, no weight decay
    mask_momentum: float = 0.0
    mask_grad: str = "normalized"       # normalized | centered | raw (see MaskConnect)
    aggregate: str = "mean"             # mean | sum of the K inputs (see MaskConnect)
    freeze_at: float = 0.5              # fraction of the training steps after which masks freeze
    label_smoothing: float = 0.0
    device: str = "auto"                # auto | cpu | cuda
    channels_last: bool | None = None   # None: on (faster for these convs on CPU and GPU)
    amp: bool | None = None             # None: autocast on CUDA only
    seed: int = 0
    resume: bool = False
    max_steps: int | None = None        # stop (and save) after this many optimizer steps in total
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    eval_batch_size: int = 500
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
