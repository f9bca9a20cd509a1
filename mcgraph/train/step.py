"""One optimizer step of weights and masks, eager or replayed as a CUDA graph.

    stepper = Stepper(model, cfg, torch.device("cuda"))
    loss, logits, stop = stepper.step(x, y)          # forward, backward, SGD, mask constraint

The trainer and the benchmarks run this one step. A step is: the forward under autocast, the
loss, the backward (scaled when the autocast dtype is fp16), the optimizer (weights: Nesterov
SGD with weight decay; masks: their own group) and the mask constraint.

**CUDA graphs** (``cfg.cuda_graph``; on by default for one CUDA process whose autocast dtype
needs no loss scaling). The first steps of a network run eagerly on a side stream (they warm
up cuDNN and cuBLAS and create the momentum buffers), the next one is captured, and every
later step copies its batch into the captured input and replays the graph: one launch
instead of hundreds, the whole step without a host decision. What makes it capturable:
learning masks draw and read their wiring on the device (:mod:`mcgraph.device_wiring`), the
optimizer is fused SGD reading its learning rates from device tensors the host refills
before each replay, and no GradScaler (bf16 autocast or none). The host mirrors of the masks'
state go stale while replaying: :meth:`Stepper.sync_host` refreshes them, and the trainer calls
it before anything reads them (evaluation, freeze, checkpoints). A network whose step cannot
be captured falls back to eager steps with one warning.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from .. import device_wiring
from ..constraints import constrain_masks_
from ..errors import McGraphError
from ..mask_ops import renormalize_mask_grads_, sync_masks_to_host
from ..masks import mask_modules
from .config import TrainConfig
from .optim import make_optimizer

WARMUP = 2            # eager steps of a network before its step is captured
Check = Callable[[torch.Tensor], bool]   # loss -> whether to stop (raises to abort)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """The autocast dtype: ``cfg.amp_dtype``, or bf16 where the GPU has it (no loss scaling)."""
    if cfg.amp_dtype == "float16":
        return torch.float16
    if cfg.amp_dtype == "bfloat16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


class Stepper:
    """The optimizer, the scaler, the network a step runs (``net``) and, in graph mode, the
    captured step. ``model`` is the masked GraphModule whose parameters are trained."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
                 world_size: int = 1, channels_last: bool = True):
        self.model, self.cfg, self.device = model, cfg, device
        self.channels_last = channels_last
        on_cuda = device.type == "cuda"
        self.amp = on_cuda if cfg.amp is None else (cfg.amp and on_cuda)
        self.dtype = amp_dtype(cfg, device)
        scaled = self.amp and self.dtype == torch.float16
        self.graphs = self._want_graphs(cfg, device, world_size, scaled)
        self.opt = make_optimizer(model, cfg, fused=self.graphs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.net: nn.Module = model
        self.on_device = self.graphs         # learning masks draw and read on the device
        self.captures = self.graphs          # this network's step is replayed (set_net)
        self._graph: _Graph | None = None
        self._eager_steps = 0
        self._pending_weights_only = False

    @staticmethod
    def _want_graphs(cfg: TrainConfig, device: torch.device, world_size: int, scaled: bool) -> bool:
        if cfg.cuda_graph and cfg.mask_batches != "same":
            raise McGraphError("train", "cuda_graph captures one forward-backward a step; "
                                        "mask_batches 'other' takes two (step eagerly)",
                               ("cuda_graph", "mask_batches"))
        if cfg.mask_batches != "same":
            return False
        if cfg.cuda_graph is False or device.type != "cuda" or world_size > 1:
            if cfg.cuda_graph and device.type != "cuda":
                raise McGraphError("train", "cuda_graph needs device 'cuda'", "cuda_graph")
            if cfg.cuda_graph and world_size > 1:
                raise McGraphError("train", "cuda_graph runs one process; distributed runs step "
                                            "eagerly", "cuda_graph")
            return False
        if scaled:
            if cfg.cuda_graph:
                raise McGraphError("train", "cuda_graph cannot capture fp16 autocast's loss "
                                            "scaling; use amp_dtype bfloat16 or no amp",
                                   ("cuda_graph", "amp_dtype"))
            return False
        return True

    def set_net(self, net: nn.Module) -> None:
        """Step ``net`` from now on (the trainer's lowered view after the freeze); a captured
        step of the previous network is dropped and the new one is captured afresh."""
        device_wiring.disable(self.model)
        self.net, self._graph, self._eager_steps = net, None, 0
        learning = any(m.learning for m in mask_modules(self.model))
        # a capture bakes in whatever the host decides: masks that draw on the host (branch
        # level) would replay one wiring forever, so such a network steps eagerly
        self.on_device = self.graphs and device_wiring.enable(self.model)
        self.captures = self.graphs and (self.on_device or not learning)

    def wire_on_device(self) -> None:
        """Eager steps with device wiring too (graph mode always has it): what a captured step
        computes, stepped eagerly; tests compare the two."""
        self.on_device = True
        device_wiring.enable(self.model)

    def after_restore(self) -> None:
        """A loaded optimizer state carries the saved run's fused/foreach flags: keep ours."""
        if self.graphs:
            for g in self.opt.param_groups:
                g["fused"], g["foreach"] = True, None

    # ---------------------------------------------------------------- the step
    def step(self, x: torch.Tensor, y: torch.Tensor, check: Check | None = None,
             mask_batch: tuple[torch.Tensor, torch.Tensor] | None = None):
        """One step; returns (loss, logits, stop). ``check(loss)`` runs before the update in
        eager steps and after it in replayed ones (it may raise to abort the run).
        ``mask_batch``: the masks learn from this batch, in a step of their own before the
        weights' (``mask_batches='other'``); the weights' step then leaves the masks alone."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if mask_batch is not None:
            self._mask_step(*mask_batch)
        if self.captures and self._graph is None and self._eager_steps >= WARMUP:
            self._graph = self._capture(x, y)
        if self._graph is not None:
            loss, logits = self._graph.replay(x, y, self.opt)
            return loss.detach(), logits.detach(), bool(check and check(loss))
        self._eager_steps += 1
        if self.graphs:
            return self._side_stream_step(x, y, check)
        return self._eager(x, y, check)

    def _forward(self, x: torch.Tensor, y: torch.Tensor, cache: bool = True):
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp,
                            cache_enabled=cache):
            logits = self.net(x)
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        return loss, logits

    def _update(self, loss: torch.Tensor, only: str | None = None) -> None:
        """Backward and step; ``only`` 'masks' or 'weights' drops the other group's gradients
        (a step of one group: SGD skips parameters without one). After a mask step, the next
        update is the weights' alone."""
        if only is None and self._pending_weights_only:
            only, self._pending_weights_only = "weights", False
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if only is not None:
            drop = "weights" if only == "masks" else "masks"
            for g in self.opt.param_groups:
                if g.get("name") == drop:
                    for p in g["params"]:
                        p.grad = None
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.opt)
            renormalize_mask_grads_(self.model)
        self.scaler.step(self.opt)
        self.scaler.update()
        constrain_masks_(self.model, self.cfg.mask_constraint)

    def _eager(self, x: torch.Tensor, y: torch.Tensor, check: Check | None,
               only: str | None = None):
        if not self.on_device and any(m.learning for m in mask_modules(self.model)):
            sync_masks_to_host(self.model)            # one device read for all masks' m~
        loss, logits = self._forward(x, y)
        stop = bool(check and check(loss))
        self._update(loss, only)
        return loss.detach(), logits.detach(), stop

    def _mask_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The masks' own step on ``x`` (first-order bi-level): weights get no update."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._eager(x, y, None, only="masks")
        self._pending_weights_only = True

    def _side_stream_step(self, x: torch.Tensor, y: torch.Tensor, check: Check | None):
        """An eager step of graph mode: on a side stream, as capture wants its warm-up."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            loss, logits = self._forward(x, y, cache=False)
            stop = bool(check and check(loss))
            self._update(loss)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return loss.detach(), logits.detach(), stop

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> "_Graph | None":
        try:
            return _Graph(self, x, y)
        except Exception as e:       # noqa: BLE001 - any capture failure: eager from here on
            warnings.warn(f"train: the step could not be captured as a CUDA graph "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); stepping "
                          f"eagerly", stacklevel=3)
            self.graphs = self.on_device = self.captures = False
            device_wiring.disable(self.model)
            return None

    def sync_host(self) -> None:
        """Refresh the masks' host mirrors (step counters, m~) from the device."""
        for m in mask_modules(self.model):
            m.refresh_host_state()


class _Graph:
    """A captured step: static input, label and learning-rate tensors, the graph, and the
    loss and logits it writes."""

    def __init__(self, stepper: Stepper, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.clone(), y.clone()
        opt, dev = stepper.opt, stepper.device
        self.lrs = [torch.tensor(float(g["lr"]), device=dev) for g in opt.param_groups]
        floats = [g["lr"] for g in opt.param_groups]
        torch.cuda.synchronize(dev)
        self.graph = torch.cuda.CUDAGraph()
        try:
            for g, t in zip(opt.param_groups, self.lrs):
                g["lr"] = t                # the fused step reads the rate from the device
            opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                self.loss, self.logits = stepper._forward(self.x, self.y, cache=False)
                stepper._update(self.loss)
        finally:
            for g, f in zip(opt.param_groups, floats):
                g["lr"] = f

    def replay(self, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer):
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        for g, t in zip(opt.param_groups, self.lrs):
            t.fill_(float(g["lr"]))
        self.graph.replay()
        return self.loss, self.logits
