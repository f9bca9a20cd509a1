"""torchrun --nproc_per_node=2 on gloo: ranks train in lockstep with the same masks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mcgraph

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(*args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def test_ddp_ranks_keep_identical_masks_and_weights(tmp_path):
    r = _torchrun(Path(__file__).with_name("ddp_worker.py"), tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    # 512 synthetic images over 2 ranks, batch 32 each: 8 steps per epoch
    assert r.stdout.count("steps 16 ok") == 2, r.stdout


def test_ddp_from_the_cli(tmp_path):
    r = _torchrun("-m", "mcgraph", "train", "resnet20", "--data", "synthetic", "--epochs", "1",
                  "--batch-size", "32", "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["steps_per_epoch"] == 8
    assert mcgraph.load(tmp_path / "run" / "last.pt") is not None
