"""The MaskConnect mask: K-hot sampling, straight-through gradient, clip, freeze.

Input of module j:  x_j = sum_k m_{j,k} * adapt_k(y_k)  with m_j K-hot (docs/design.md §2).

The forward pass adds only the K chosen inputs. The backward pass computes the straight-through
gradient dL/dm_{j,k} = <dL/dx_j, adapt_k(y_k)> for every candidate k from the y_k that are alive
anyway, so activation memory stays linear in depth (the op: mcgraph.masked_sum).

    mc = MaskConnect("layer1.1", ["relu", "layer1.0"], [(1, 1), (1, 1)], [16, 16], 16, fan_in=1)
    x = mc(y_stem, y_block0)      # (N, 16, H, W)
"""
from __future__ import annotations

import operator
import warnings
from typing import Iterable, Literal, Sequence, get_args

import numpy as np
import torch
from torch import nn

from . import device_wiring
from .masked_sum import MaskedSum, process_grad, view  # noqa: F401  (process_grad re-exported)

Init = Literal["uniform", "prev", "random", "full"]
MaskGrad = Literal["normalized", "centered", "raw"]
Aggregate = Literal["mean", "sum"]
Constraint = Literal["simplex", "box"]       # see mcgraph.constraints
CONSTRAINTS: tuple[str, ...] = get_args(Constraint)
INITS: tuple[str, ...] = get_args(Init)
GRADS: tuple[str, ...] = get_args(MaskGrad)
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
UNIFORM_VALUE = 0.5  # 'uniform' init: every entry equal, mid-range so it can move both ways


def adapt(y: torch.Tensor, sh: int, sw: int, out_channels: int) -> torch.Tensor:
    """Parameter-free adapter (ResNet option A): subsample space, zero-pad channels."""
    y = view(y, (sh, sw))
    pad = out_channels - y.shape[1]
    if pad:
        y = torch.nn.functional.pad(y, (0, 0, 0, 0, 0, pad))
    return y


def _stream_seed(seed: int, index: int, step: int) -> int:
    # Independent streams per (seed, module, step): every DDP rank draws the same masks.
    return (seed * 0x9E3779B1 + index * 0xC2B2AE3D + step * 0x85EBCA77) % (2**63 - 1)


class KHotMask(nn.Module):
    """A real-valued mask m~ over ``rows`` independent selections of K among ``n`` candidates.

    State: ``mask`` (m~ in [0,1], a Parameter), buffers ``frozen``, ``chosen`` (the K-hot value
    after freeze, same shape as ``mask``), ``step`` (draw counter: resumed runs draw the same)
    and ``overflow`` (what the 'box' clip removed from an entry since it reached 0 or 1: the
    ranking key is m~ + overflow, so entries saturated together are still told apart by how hard
    the gradient keeps pushing them; see mcgraph.constraints).

    ``grad``: ``"centered"`` removes from dL/dm the part common to a row's candidates. A K-hot
    row always sums to K, so that part ("make the input larger") is not a direction the binary
    mask can move in; left in, it pushes every m~ of a row to 0 or 1 together (the inputs are
    post-ReLU, so <g, y_k> shares a sign across k) and sampling degenerates to uniform.
    ``"normalized"`` (default) also divides the centered gradient by its RMS over the row, so
    ``mask_lr`` is a step size in mask units whatever the loss scale, batch size or depth (raw
    dot products differ by orders of magnitude between modules). ``"raw"`` is the paper's.
    """

    def __init__(self, target: str, shape: tuple[int, ...], fan_in: int, init: str = "uniform",
                 prev: int | None = None, seed: int = 0, index: int = 0, grad: str = "normalized"):
        super().__init__()
        name = type(self).__name__
        rows, n = (1, shape[0]) if len(shape) == 1 else shape
        if n == 0:
            raise ValueError(f"{name}: {target} has no candidates")
        if init not in INITS:
            raise ValueError(f"{name}: unknown init '{init}', expected one of {INITS}")
        if grad not in GRADS:
            raise ValueError(f"{name}: unknown grad '{grad}', expected one of {GRADS}")
        self.target, self.rows, self.grad = target, rows, grad
        self.prev = n - 1 if prev is None else int(prev)   # the original input (fallback_order)
        self._warned_zero = False                          # see _zero_rows (once per mask)
        self.fan_in = min(int(fan_in), n)   # fewer candidates than K: take them all
        self.seed, self.index = int(seed), int(index)
        self.grad_samples: int | None = None    # see set_grad_samples (not checkpointed)
        self.mask = nn.Parameter(self._init_values(init, rows, n, prev).view(shape))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("chosen", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("overflow", torch.zeros(shape))
        # Host mirrors of the sampling state. Reading the buffers (or m~) from a GPU every
        # forward costs a device sync per mask, which serializes a CUDA step; the buffers stay
        # the checkpointed truth and are kept equal (freeze, forward, load_state_dict).
        self._frozen_h, self._step_h = False, 0
        self._chosen_h = torch.zeros(rows, n, dtype=torch.bool)
        self._values_h: torch.Tensor | None = None
        self._values_key: tuple[int, int] | None = None
        self._device = None          # mcgraph.device_wiring's state while it is enabled
        self.temperature = 1.0       # sampling draws from m~^(1/T) (set_temperature; not saved)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        if prefix + "mask" in state_dict and prefix + "overflow" not in state_dict:
            state_dict[prefix + "overflow"] = torch.zeros_like(self.overflow)   # older checkpoints
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "frozen" in state_dict:
            self._frozen_h = bool(state_dict[prefix + "frozen"])
            self._step_h = int(state_dict[prefix + "step"])
            chosen = state_dict[prefix + "chosen"]
            self._chosen_h = chosen.detach().cpu().view(self.rows, -1).clone()
        self._values_key = None

    def refresh_host_state(self) -> None:
        """Re-read the host mirrors from the buffers (after device code moved them unseen:
        CUDA graph replays change ``step`` and m~ without the host knowing)."""
        self._step_h = int(self.step)
        self._values_key = None

    def set_step(self, step: int) -> None:
        """Set the draw counter (the next training forward draws with ``step``)."""
        self._step_h = int(step)
        self.step.fill_(self._step_h)

    @property
    def is_frozen(self) -> bool:
        """Whether the binary mask is fixed (read without touching the device)."""
        return self._frozen_h

    def _key(self) -> tuple[int, int]:
        return (self.mask._version, self.mask.data_ptr())   # changes with every in-place update

    def set_host_values(self, values: torch.Tensor) -> None:
        """Give m~'s current values (any shape, on the CPU): see :func:`sync_masks_to_host`."""
        self._values_h, self._values_key = values.float().view(self.rows, -1), self._key()

    def _init_values(self, init: str, rows: int, n: int, prev: int | None) -> torch.Tensor:
        if init == "uniform":
            return torch.full((rows, n), UNIFORM_VALUE)
        if init == "full":
            return torch.ones(rows, n)
        if init == "random":
            g = torch.Generator().manual_seed(_stream_seed(self.seed, self.index, -1))
            return torch.rand(rows, n, generator=g)
        m = torch.zeros(rows, n)             # prev: the original wiring, one-hot
        m[:, n - 1 if prev is None else prev] = 1.0
        return m

    @property
    def num_candidates(self) -> int:
        return self.mask.shape[-1]

    def _m2(self) -> torch.Tensor:
        """m~ as (rows, n) on the CPU: the mirror when it is current, else one device read."""
        if self._values_key != self._key():
            self.set_host_values(self.mask.detach().float().cpu())
        return self._values_h  # type: ignore[return-value]

    def rank_key(self) -> torch.Tensor:
        """(rows, n) on the CPU: m~ + overflow, what top-K ranks (see the class docstring)."""
        over = self.overflow.detach().float().cpu().view(self.rows, -1)
        return self._m2() + over if bool(over.any()) else self._m2()

    def topk_rows(self) -> torch.Tensor:
        """(rows, K): top-K of each row by :meth:`rank_key`, sorted; exactly equal keys fall
        back to the lower index, except in a row whose m~ is all 0 (:meth:`fallback_order`)."""
        key, zero = self.rank_key(), self._zero_rows()
        if not bool(zero.any()):
            order = torch.sort(key, dim=1, descending=True, stable=True).indices
        else:   # rank in preference order, so that equal keys keep that order
            n = self.num_candidates
            pref = torch.where(zero[:, None], self.fallback_order(),
                               torch.arange(n).expand(self.rows, n))
            idx = torch.sort(key.gather(1, pref), dim=1, descending=True, stable=True).indices
            order = pref.gather(1, idx)
        return torch.sort(order[:, : self.fan_in], dim=1).values

    def fallback_order(self) -> torch.Tensor:
        """(rows, n): how a row whose m~ is all 0 breaks ties: the original wiring first. One
        row: the original input (``prev``), then the nearest earlier candidates. A square mask
        (branch level, row i is stream i): row i's own branch i, then i+1, ... cyclically."""
        n = self.num_candidates
        if self.rows == n and self.rows > 1:
            return (torch.arange(n)[None, :] + torch.arange(n)[:, None]) % n
        rest = [k for k in range(n - 1, -1, -1) if k != self.prev]
        return torch.tensor([self.prev] + rest).expand(self.rows, n)

    def _zero_rows(self) -> torch.Tensor:
        """(rows,) bool: rows whose m~ is all 0 (the 'box' clip after a gradient that pushed
        every entry down, e.g. ``mask_grad='raw'``). Warns once per mask: such a row samples
        uniformly, and eval and freeze fall back to :meth:`fallback_order` where keys tie."""
        zero = self._m2().amax(dim=1) <= 0
        if not self._warned_zero and bool(zero.any()):
            self._warned_zero = True
            idx = torch.nonzero(zero).flatten().tolist()
            which = f"row {idx[0]}" if len(idx) == 1 else f"rows {idx}"
            warnings.warn(
                f"KHotMask: {self.target}: every m~ of {which} is 0 (the gradient pushed the "
                f"whole row out, e.g. mask_grad='raw' with the 'box' clip): sampling is uniform "
                f"over its candidates, and eval and freeze rank it by the clip's overflow, then "
                f"prefer the original input ({self._fallback_text()}), not the lowest indices "
                f"(the 'simplex' constraint and centered gradients keep rows off 0)", stacklevel=3)
        return zero

    def _fallback_text(self) -> str:
        if self.rows == self.num_candidates and self.rows > 1:
            return "row i: branch i"
        names = getattr(self, "candidates", None)
        return f"candidate {names[self.prev] if names else self.prev}, then the nearest earlier"

    def sample_rows(self) -> torch.Tensor:
        """(rows, K): K distinct candidates per row, drawn with probability proportional to m~.

        Gumbel-top-k: top-K of log m~ + Gumbel noise. Zero entries get log(1e-12), so they are
        only drawn when fewer than K entries are positive (the all-zero guard)."""
        g = torch.Generator().manual_seed(_stream_seed(self.seed, self.index, self._step_h))
        if not self._warned_zero:
            self._zero_rows()                  # warns (once) about rows pushed out entirely
        logits = torch.log(self._m2().clamp_min(1e-12))
        if self.temperature != 1.0:              # sharper toward the top-K as T falls
            logits = logits / self.temperature
        u = torch.rand(logits.shape, generator=g).clamp_(1e-20, 1.0 - 1e-7)
        keys = logits - torch.log(-torch.log(u))
        return torch.sort(torch.topk(keys, self.fan_in, dim=1).indices, dim=1).values

    def selected_rows(self) -> torch.Tensor:
        """(rows, K) indices this forward reads: frozen set, a sample (training) or top-K (eval)."""
        if self._frozen_h:
            return torch.stack([torch.nonzero(r).flatten() for r in self._chosen_h])
        return self.sample_rows() if self.training else self.topk_rows()

    def binary(self) -> torch.Tensor:
        """The K-hot value (bool, shaped like ``mask``) the current mode would use."""
        hot = torch.zeros(self.rows, self.num_candidates, dtype=torch.bool)
        hot.scatter_(1, self.selected_rows(), True)
        return hot.view(self.mask.shape)

    def eval_binary(self) -> torch.Tensor:
        """(rows, n) bool: what eval reads (the frozen set, else top-K of m~), whatever the mode."""
        if self._frozen_h:
            return self._chosen_h.clone()
        hot = torch.zeros(self.rows, self.num_candidates, dtype=torch.bool)
        return hot.scatter_(1, self.topk_rows(), True)

    @property
    def learning(self) -> bool:
        return self.training and not self._frozen_h

    @torch.no_grad()
    def freeze(self, chosen: Iterable | None = None) -> None:
        """Fix the binary mask (default: top-K of m~); m~ stops receiving gradients. ``chosen``:
        candidate indices (one row) or one list of indices per row, as lists, 1-D / 2-D integer
        tensors or arrays, or a K-hot bool tensor / array shaped like ``mask``."""
        rows = ([r.tolist() for r in self.topk_rows()] if chosen is None
                else self._index_rows(chosen))
        if len(rows) != self.rows:
            raise ValueError(f"{type(self).__name__}: {self.target} needs {self.rows} rows of "
                             f"indices, got {len(rows)}")
        hot = torch.zeros(self.rows, self.num_candidates, dtype=torch.bool)
        for i, r in enumerate(rows):
            r = sorted(r)
            if len(set(r)) != self.fan_in or len(r) != self.fan_in or not all(
                    0 <= k < self.num_candidates for k in r):
                raise ValueError(f"{type(self).__name__}: {self.target} row {i} needs "
                                 f"{self.fan_in} distinct indices in 0..{self.num_candidates - 1}, "
                                 f"got {r}")
            hot[i, r] = True
        self.chosen.copy_(hot.view(self.chosen.shape))
        self.frozen.fill_(True)
        self._frozen_h, self._chosen_h = True, hot
        self.mask.requires_grad_(False)

    def _index_rows(self, chosen: Iterable) -> list[list[int]]:
        """``chosen`` as one list of ints per row (see :meth:`freeze`); ValueError if it is not
        indices (floats, 0-D or 3-D and more, a K-hot value with the wrong count)."""
        name = f"{type(self).__name__}: {self.target}"
        if isinstance(chosen, np.ndarray):
            chosen = torch.from_numpy(chosen)
        if isinstance(chosen, torch.Tensor):
            t = chosen.detach().cpu()
            if t.dim() not in (1, 2):
                raise ValueError(f"{name}: indices must be 1-D or 2-D, got {t.dim()}-D")
            if t.dtype == torch.bool:               # a K-hot value, like the ``chosen`` buffer
                t = t.view(-1, t.shape[-1])
                if t.shape[1] != self.num_candidates or bool((t.sum(1) != self.fan_in).any()):
                    raise ValueError(f"{name}: a K-hot value needs {self.fan_in} ones in each row "
                                     f"of {self.num_candidates}, got shape {tuple(chosen.shape)} "
                                     f"with {t.sum(1).tolist()} ones")
                return [torch.nonzero(r).flatten().tolist() for r in t]
            if t.dtype.is_floating_point or t.dtype.is_complex:
                raise ValueError(f"{name}: indices must be integers, got {t.dtype}")
            return t.tolist() if t.dim() == 2 else [t.tolist()]
        items = list(chosen)
        if items and (isinstance(items[0], (list, tuple)) or getattr(items[0], "ndim", 0) > 0):
            return [self._index_rows(r)[0] for r in items]         # one sequence per row
        try:
            return [[operator.index(k) for k in items]]
        except TypeError:
            raise ValueError(f"{name}: indices must be integers, got {items}") from None

    def extra_repr(self) -> str:
        return (f"target={self.target}, rows={self.rows}, candidates={self.num_candidates}, "
                f"fan_in={self.fan_in}, frozen={self._frozen_h}")


class MaskConnect(KHotMask):
    """Learnable K-sparse masked sum over a module's candidate inputs (one row).

    ``aggregate``: ``"mean"`` (default) feeds the block (1/K) sum_k m_k y_k, ``"sum"`` the plain
    sum of the paper. They agree for K=1. With K>1 a plain sum lets activations grow
    geometrically with depth (each block adds K earlier outputs, each already a sum), which makes
    training with resampled wiring unstable; the mean keeps every block's input on one scale.
    """

    def __init__(self, target: str, candidates: Sequence[str], strides: Sequence[tuple[int, int]],
                 in_channels: Sequence[int], out_channels: int, fan_in: int,
                 init: str = "uniform", prev: int | None = None, seed: int = 0, index: int = 0,
                 grad: str = "normalized", aggregate: str = "mean"):
        if aggregate not in AGGREGATES:
            raise ValueError(f"MaskConnect: unknown aggregate '{aggregate}', expected {AGGREGATES}")
        super().__init__(target, (len(candidates),), fan_in, init, prev, seed, index, grad)
        self.candidates = list(candidates)
        self.strides = tuple((int(a), int(b)) for a, b in strides)
        self.in_channels, self.out_channels = list(in_channels), int(out_channels)
        self.aggregate = aggregate

    def topk(self) -> torch.Tensor:
        return self.topk_rows()[0]

    def sample(self) -> torch.Tensor:
        return self.sample_rows()[0]

    def selected(self) -> torch.Tensor:
        return self.selected_rows()[0]

    @property
    def scale(self) -> float:
        """Factor on the masked sum: 1/K for 'mean', 1 for 'sum'."""
        return 1.0 / self.fan_in if self.aggregate == "mean" else 1.0

    def forward(self, *ys: torch.Tensor) -> torch.Tensor:
        if len(ys) != self.num_candidates:
            raise ValueError(f"MaskConnect: {self.target} expects {self.num_candidates} inputs, "
                             f"got {len(ys)}")
        learning = self.learning
        if learning and self._device is not None:
            return device_wiring.forward(self, ys)
        chosen = tuple(int(i) for i in self.selected())
        if learning:
            self.step += 1              # on the device, asynchronous
            self._step_h += 1
        mask = self.mask if learning else self.mask.detach()
        return MaskedSum.apply(mask, chosen, self.strides, self.out_channels, self.grad,
                               self.scale, self.grad_samples, *ys)


def mask_modules(model: nn.Module) -> list[KHotMask]:
    """Every mask of ``model``: module-level (MaskConnect) and branch-level (BranchMask)."""
    return [m for m in model.modules() if isinstance(m, KHotMask)]

