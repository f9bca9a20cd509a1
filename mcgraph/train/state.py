"""Training state in checkpoints: what --resume needs to continue exactly where a run stopped."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from ..api import description
from ..checkpoint import write_checkpoint


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": np.random.get_state()[1].tolist(),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32),
                         state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training(path: Path, model: fx.GraphModule, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Any, *, epoch: int, batch: int, step: int,
                  best_acc: float | None, config: dict[str, Any],
                  epoch_partial: list[float] | None = None,
                  epoch_chosen: dict[str, list[list[int]]] | None = None,
                  **extra: Any) -> Path:
    """A checkpoint ``compile`` and ``eval`` read, plus the loop's state for ``--resume``."""
    train = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "batch": batch, "step": step,
             "best_acc": best_acc, "config": config, "rng": rng_state(),
             "epoch_partial": list(epoch_partial or [0.0, 0.0, 0.0, 0.0]),
             "epoch_chosen": epoch_chosen, **extra}
    return write_checkpoint(path, description(model), model.state_dict(), train=train)


def position(epoch: int, batch: int, step: int) -> str:
    """Where a saved state stands, for messages: ``epoch 2, step 9`` (in an epoch, 1-based) or
    ``end of epoch 1, step 7``."""
    if batch or not epoch:
        return f"epoch {epoch + 1}, step {step}"
    return f"end of epoch {epoch}, step {step}"
