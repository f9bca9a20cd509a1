"""torchrun --nproc_per_node=2 on gloo: ranks train in lockstep with the same masks."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from helpers import metrics_rows, run_cli_json

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(*args, log_dir=None, timeout=240):
    logs = [] if log_dir is None else ["--log-dir", str(log_dir), "--redirects", "3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", *logs, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def _why(r):
    """The ranks' own tracebacks (torchrun's summary at the end of stderr does not show them)."""
    ranks = [ln for ln in r.stderr.splitlines() if ln.startswith("[rank") and "Warning" not in ln]
    return "\n".join(ranks)[-3000:] or r.stderr[-3000:]


def test_ddp_ranks_keep_identical_masks_and_weights(tmp_path):
    r = _torchrun(Path(__file__).with_name("ddp_worker.py"), tmp_path / "run")
    assert r.returncode == 0, _why(r)
    # 512 synthetic images over 2 ranks, batch 32 each: 8 steps per epoch, 2 epochs; each rank
    # checked that the ranks agree on every parameter and buffer, that training moved masks and
    # weights, and that rank 0's last.pt holds exactly that state
    # the two ranks share one stdout: their lines may land on one line, so match, not split
    assert sorted(re.findall(r"rank \d steps \d+ ok", r.stdout)) == \
        ["rank 0 steps 14 ok", "rank 1 steps 14 ok"], r.stdout


def test_ddp_from_the_cli(tmp_path):
    run = tmp_path / "run"
    r = _torchrun("-m", "mcgraph", "train", "resnet20", "--data", "synthetic", "--epochs", "2",
                  "--batch-size", "32", "--device", "cpu", "--out", run, "--json",
                  log_dir=tmp_path / "logs")   # gloo: one GPU cannot host two nccl ranks
    assert r.returncode == 0, _why(r)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["steps_per_epoch"] == 7   # 461 images after validation
    # both ranks ran the command to the end and trained the same 2 x 7 steps
    outs = {p.parent.name: json.loads(p.read_text())
            for p in (tmp_path / "logs").rglob("stdout.log")}
    assert sorted(outs) == ["0", "1"], outs
    for res in outs.values():
        assert (res["epochs_done"], res["steps"], res["stopped"]) == (2, 14, "done"), res
    assert outs["0"]["last_test_acc"] == outs["1"]["last_test_acc"]
    # rank 0 alone wrote the metrics (one line per epoch, not one per rank) and the checkpoint,
    # after the last epoch: epochs x steps_per_epoch steps
    rows = metrics_rows(run, drop=())
    assert [(row["epoch"], row["step"]) for row in rows] == [(1, 7), (2, 14)]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert (ckpt["train"]["epoch"], ckpt["train"]["batch"], ckpt["train"]["step"]) == (2, 0, 14)
    assert ckpt["train"]["config"]["batch_size"] == 32
    # the saved model is the one the ranks evaluated: their test accuracy (each rank half of the
    # 256 test images, summed) is what the checkpoint scores alone on all of them
    ev = run_cli_json("eval", run / "last.pt", "--data", "synthetic")
    assert ev["images"] == 256 and ev["acc"] == rows[-1]["test_acc"] == outs["0"]["last_test_acc"]
    assert ev["acc"] > 30                            # a trained model, not chance (10%)
