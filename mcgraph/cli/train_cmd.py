"""mcgraph train (MODEL | masked.pt) --data ..."""
from __future__ import annotations

import os
import re

import click

from ..train.config import TrainConfig
from . import main
from ._common import config_option, emit_json, model_arg_option, table, trust_code_option

C = TrainConfig


@main.command("train", short_help="Train weights and connectivity.")
@click.argument("model")
@model_arg_option()
@trust_code_option()
@config_option(C, "data", help="fashion-mnist | cifar10 | cifar100 | imagefolder:DIR | synthetic")
@config_option(C, "data_dir", help="Where the data set's files are.")
@config_option(C, "fan_in", "--fan-in", "-k", type=int, help="K, when MODEL is a name.")
@config_option(C, "init", help="Initial masks (learned; default uniform).")
@config_option(C, "connectivity", help="Learn the masks, or train a fixed rule for comparison.")
@config_option(C, "chain_blocks", type=int,
               help="fixed-chain: the chain's length (a same-size control).")
@config_option(C, "wiring_from", help="fixed-wiring: train this checkpoint's wiring from scratch.")
@config_option(C, "epochs", type=int)
@config_option(C, "batch_size", type=int)
@config_option(C, "lr", type=float, help="Weights' learning rate.")
@config_option(C, "mask_lr", type=float)
@config_option(C, "mask_grad", help="'centered' drops the gradient part common to all candidates; "
               "'raw' is the paper's.")
@config_option(C, "mask_constraint", help="'simplex': rows of m~ sum to K (decisive); 'box': the "
               "paper's clip to [0, 1].")
@config_option(C, "mask_grad_samples", type=int, help="Estimate mask gradients from this many "
               "items of each batch (unbiased, noisier; 0: the whole batch).")
@config_option(C, "aggregate",
               help="A module reads the mean or the sum of its K inputs (same for K=1).")
@config_option(C, "weight_decay", type=float)
@config_option(C, "augment", "--augment/--no-augment",
               help="Random crop and flip of training batches.")
@config_option(C, "schedule")
@config_option(C, "warmup_steps", type=int)
@config_option(C, "freeze_at", type=float,
               help="Fraction of the training steps after which masks freeze.")
@config_option(C, "mask_anneal", "--mask-anneal/--no-mask-anneal", help="Sample wirings from "
               "m~^(1/T), T falling from 1 to 0.05 at the freeze (toward the top-K).")
@config_option(C, "mask_batches", help="Masks learn from the batch the weights step on ('same'), "
               "or from another one in a step of their own ('other': first-order bi-level).")
@config_option(C, "target_macs", type=float, help="K=1: freeze the likeliest chain whose compiled "
               "network has this fraction of the original's MACs (within 5%), e.g. 0.5.")
@config_option(C, "target_blocks", type=int, help="K=1: ... or that many blocks.")
@config_option(C, "reinit_at_freeze", "--reinit-at-freeze/--no-reinit-at-freeze", help="At the "
               "freeze, weights restart from their initial values: the learned wiring retrained.")
@config_option(C, "why_batches", type=int, help="At the freeze, measure each mask's choice "
               "against the network's preference (mcgraph inspect --why) on this many validation "
               "batches; into metrics.jsonl (0: off).")
@config_option(C, "device")
@config_option(C, "channels_last", "--channels-last/--no-channels-last",
               help="Memory format (default on).")
@config_option(C, "amp", "--amp/--no-amp", help="Mixed precision (default: on with CUDA).")
@config_option(C, "seed", type=int)
@click.option("--out", default=None, help="Run directory (default runs/<model>).")
@config_option(C, "resume", is_flag=True, help="Continue from OUT/last.pt with the saved run's "
               "settings. --lr, --mask-lr and --save-every given with it replace the saved values "
               "(a notice says so; config.json and the next metrics row record it); --max-steps "
               "and --device are this call's; any other option given with a value different from "
               "the saved run's is refused.")
@config_option(C, "overwrite", is_flag=True, help="Start over in an OUT that holds a run (its "
               "run files are deleted first); without it such an OUT is refused.")
@config_option(C, "amp_dtype", help="Autocast dtype on CUDA (auto: bfloat16 where the GPU has it).")
@config_option(C, "cuda_graph", "--cuda-graph/--no-cuda-graph", help="Replay each step as a CUDA "
               "graph (default: where it can run: one CUDA process, no fp16 loss scaling).")
@config_option(C, "max_steps", type=int, help="Stop after this many steps (state is saved).")
@config_option(C, "save_every", type=int, help="Also write last.pt every N optimizer steps (a "
               "killed run loses at most N; default: at epoch ends and on Ctrl-C/SIGTERM).")
@config_option(C, "val_size", type=int, help="Training images held out to choose best.pt "
               "(default 5,000 for Fashion-MNIST and CIFAR; 0: none, best.pt is the last epoch).")
@config_option(C, "max_train_samples", type=int, help="Use only the first N training images.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_cmd(model, out, no_progress, as_json, **options):
    """Train a network's weights and connectivity on a data set; writes a run directory.

    \b
    mcgraph train resnet20 -k 1 --data fashion-mnist --epochs 2 --out runs/r20
    mcgraph train masked.pt --data imagefolder:photos --target-macs 0.5 --out runs/mine

    MODEL is a masked checkpoint, or a model source (a registered name, torchvision:NAME,
    timm:NAME, path/file.py:factory or package.module:factory) rewritten on the fly. A checkpoint
    (or --resume's last.pt) whose model is a file or module source is rebuilt only with
    --trust-code, or when MODEL is that source itself. An OUT holding a run needs --resume or
    --overwrite. Ctrl-C or SIGTERM saves last.pt and exits with 130; a second one aborts."""
    from ..train.loop import train
    out = out or os.path.join("runs", _run_name(model))
    cfg = TrainConfig(model=model, out=out, progress=not (no_progress or as_json), **options)
    ctx = click.get_current_context()
    given = [name for name in options
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    res = summary(train(cfg, given=given))
    if as_json:
        emit_json(res)
    else:
        click.echo(table(list(res.items()), ["", "value"]))


def summary(res) -> dict:
    """What the run left: only figures it measured and files that exist (a run stopped before
    its first epoch ended has no best.pt and no accuracy)."""
    out = {"out": res.out, "epochs_done": res.epochs_done, "steps": res.steps,
           "best_test_acc": res.best_acc, "best_val_acc": res.best_val_acc,
           "best_epoch": res.best_epoch or None, "last_test_acc": res.last_acc,
           "seconds": round(res.seconds, 1), "stopped": res.stopped}
    for name in ("best", "last"):
        if os.path.isfile(os.path.join(res.out, f"{name}.pt")):
            out[name] = f"{res.out}/{name}.pt"
    return {k: v for k, v in out.items() if v is not None}


def _run_name(model: str) -> str:
    """runs/<this>: a checkpoint's or a file's stem, else the source with ':' and '/' as '-'."""
    base = os.path.basename(model.rpartition(":")[0] if ".py:" in model else model)
    if base.endswith((".pt", ".py")):
        base = os.path.splitext(base)[0]
    return re.sub(r"[^\w.-]+", "-", base) or "default"
