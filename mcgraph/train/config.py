"""Training configuration: a frozen dataclass, the single source of its defaults, validated on
creation (``__post_init__``); the CLI derives its options from it and the trainer reads it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from ..config import ModelArgs, check, model_args_tuple, validate_literals
from ..device import DeviceName
from ..masks import Aggregate, Constraint, Init, MaskGrad

Connectivity = Literal["learned", "fixed-prev", "fixed-full", "fixed-random", "fixed-chain",
                       "fixed-wiring"]
Schedule = Literal["cosine", "step"]
MaskBatches = Literal["same", "other"]
AmpDtype = Literal["auto", "bfloat16", "float16"]
CONNECTIVITY: tuple[str, ...] = get_args(Connectivity)
WHERE = "train"


@dataclass(frozen=True)
class TrainConfig:
    model: str                          # a model source (rewritten on the fly) or a masked .pt
    data: str = "fashion-mnist"         # fashion-mnist | cifar10 | cifar100 | imagefolder:DIR |
                                        # synthetic
    data_dir: str | None = None
    out: str = "runs/default"
    fan_in: int = 2                     # K, for a model given by name
    init: Init | None = None            # None: 'uniform' when learned, else the rule's own
    connectivity: Connectivity = "learned"
    chain_blocks: int | None = None     # fixed-chain: a K=1 chain of this many blocks, seeded
    wiring_from: str | None = None      # fixed-wiring: the frozen wiring of this checkpoint
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1                     # weights: SGD, Nesterov momentum
    momentum: float = 0.9
    weight_decay: float = 5e-4          # weights only, never the masks
    schedule: Schedule = "cosine"       # cosine | step (x0.1 at 50% and 75% of the steps)
    warmup_steps: int = 0
    mask_lr: float = 0.05               # masks: plain SGD, no momentum, no weight decay
    mask_momentum: float = 0.0
    mask_grad: MaskGrad = "normalized"  # see KHotMask
    mask_constraint: Constraint = "simplex"   # simplex: rows sum to K | box: the paper's clip
    mask_grad_samples: int = 0          # mask gradients from this many items of a batch (0: all;
                                        # docs/results.md grad_samples: 32 chose worse wirings)
    aggregate: Aggregate = "mean"       # mean | sum of the K inputs (see MaskConnect)
    freeze_at: float = 0.3              # fraction of the steps after which masks freeze (see
                                        # docs/results.md)
    mask_anneal: bool = True            # sample from m~^(1/T), T falling from 1 to 0.05 at the
                                        # freeze (docs/results.md screen: never worse, better at
                                        # Table 1's budget)
    mask_batches: MaskBatches = "same"  # masks learn from the weights' batch, or from another one
                                        # (first-order bi-level: one more forward-backward a step)
    reinit_at_freeze: bool = False      # at the freeze, weights restart from their initial values
    target_macs: float | None = None    # K=1: freeze to the likeliest chain of this fraction of
                                        # the original network's MACs (+-5%; mcgraph.target)
    target_blocks: int | None = None    # K=1: ... or of this many blocks
    label_smoothing: float = 0.0
    augment: bool = True                # random crop and flip of training batches (the data set's)
    device: DeviceName = "auto"         # auto | cpu | cuda
    channels_last: bool | None = None   # None: on (faster for these convs on CPU and GPU)
    amp: bool | None = None             # None: autocast on CUDA only
    amp_dtype: AmpDtype = "auto"        # auto: bfloat16 where the GPU has it (no loss scaling)
    cuda_graph: bool | None = None      # None: replay each step as a CUDA graph where it can
    seed: int = 0
    resume: bool = False
    overwrite: bool = False             # start over in an out directory that holds a run
    max_steps: int | None = None        # stop (and save) after this many optimizer steps in total
    save_every: int | None = None       # also write last.pt every this many steps (None: epoch
                                        # ends)
    val_size: int | None = None         # held out from training (None: 5,000 / a tenth; 0: none)
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    eval_batch_size: int = 500
    bn_recalibration_batches: int = 20  # while masks learn, eval re-estimates BN on this many
                                        # (0: off)
    why_batches: int = 2                # at the freeze, mcgraph.why on this many validation
                                        # batches of 250, into metrics.jsonl (0: off)
    progress: bool = True
    model_args: ModelArgs = ()          # keyword arguments of the model source's factory
    trust_code: bool = False            # rebuild a .pt (or last.pt) naming a file/module source

    def __post_init__(self) -> None:
        validate_literals(self, WHERE)
        object.__setattr__(self, "model_args", model_args_tuple(self.model_args, WHERE))
        for name in ("epochs", "batch_size", "eval_batch_size", "fan_in"):
            check(getattr(self, name) >= 1, WHERE, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "mask_lr", "weight_decay", "momentum", "mask_momentum",
                     "label_smoothing", "warmup_steps", "bn_recalibration_batches",
                     "mask_grad_samples",
                     "why_batches"):
            check(getattr(self, name) >= 0, WHERE, name, f"must be >= 0, got {getattr(self, name)}")
        check(self.val_size is None or self.val_size >= 0, WHERE, "val_size",
              f"must be >= 0, got {self.val_size}")
        check((self.connectivity == "fixed-chain") == (self.chain_blocks is not None), WHERE,
              "chain_blocks", "is the chain length of connectivity 'fixed-chain' (and only of it)")
        check(self.chain_blocks is None or self.chain_blocks >= 1, WHERE, "chain_blocks",
              f"must be >= 1, got {self.chain_blocks}")
        check((self.connectivity == "fixed-wiring") == (self.wiring_from is not None), WHERE,
              "wiring_from", "is the checkpoint of connectivity 'fixed-wiring' (and only of it)")
        for name in ("max_steps", "save_every", "max_train_samples", "max_test_samples"):
            v = getattr(self, name)
            check(v is None or v >= 1, WHERE, name, f"must be >= 1, got {v}")
        check(0.0 <= self.freeze_at <= 1.0, WHERE, "freeze_at",
              f"is a fraction of the training steps in [0, 1], got {self.freeze_at}")
        check(self.target_macs is None or 0 < self.target_macs <= 1, WHERE, "target_macs",
              f"is a fraction of the original network's MACs in (0, 1], got {self.target_macs}")
        check(self.target_blocks is None or self.target_blocks >= 1, WHERE, "target_blocks",
              f"must be >= 1, got {self.target_blocks}")
        check(self.target_macs is None or self.target_blocks is None, WHERE, "target_macs",
              "and target_blocks are two targets: give one")
        check((self.target_macs is None and self.target_blocks is None)
              or self.connectivity == "learned", WHERE, "target_macs",
              "(or target_blocks) chooses a learned wiring; fixed rules choose their own")
        check(not (self.resume and self.overwrite), WHERE, "overwrite",
              "continues nothing: give resume or overwrite, not both")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
