"""mcgraph train (MODEL | masked.pt) --data ..."""
from __future__ import annotations

import click

from ..masks import AGGREGATES, GRADS, INITS
from ..train.config import CONNECTIVITY, TrainConfig
from . import main
from ._common import emit_json, table

D = TrainConfig.__dataclass_fields__


def _d(name: str):
    return D[name].default


@main.command("train")
@click.argument("model")
@click.option("--data", default=_d("data"), show_default=True,
              help="fashion-mnist | cifar10 | cifar100 | imagefolder:DIR | synthetic")
@click.option("--data-dir", default=None, help="Where the data set's files are.")
@click.option("--fan-in", "-k", type=int, default=_d("fan_in"), show_default=True,
              help="K, when MODEL is a name.")
@click.option("--init", type=click.Choice(INITS), default=None, help="Initial masks (learned).")
@click.option("--connectivity", type=click.Choice(CONNECTIVITY), default=_d("connectivity"),
              show_default=True, help="Learn the masks, or train a fixed rule for comparison.")
@click.option("--epochs", type=int, default=_d("epochs"), show_default=True)
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True)
@click.option("--lr", type=float, default=_d("lr"), show_default=True, help="Weights' learning rate.")
@click.option("--mask-lr", type=float, default=_d("mask_lr"), show_default=True)
@click.option("--mask-grad", type=click.Choice(GRADS), default=_d("mask_grad"), show_default=True,
              help="'centered' drops the gradient part common to all candidates; 'raw' is the paper's.")
@click.option("--aggregate", type=click.Choice(AGGREGATES), default=_d("aggregate"), show_default=True,
              help="A module reads the mean or the sum of its K inputs (same for K=1).")
@click.option("--weight-decay", type=float, default=_d("weight_decay"), show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "step"]), default=_d("schedule"), show_default=True)
@click.option("--freeze-at", type=float, default=_d("freeze_at"), show_default=True,
              help="Fraction of the epochs after which masks are frozen.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--channels-last/--no-channels-last", default=None, help="Memory format (default on).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=None, help="Run directory (default runs/<model>).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (state is saved).")
@click.option("--max-train-samples", type=int, default=None, help="Use only the first N training images.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_cmd(model, data, data_dir, fan_in, init, connectivity, epochs, batch_size, lr, mask_lr,
              mask_grad, aggregate, weight_decay, schedule, freeze_at, device, channels_last, seed, out, resume, max_steps,
              max_train_samples, no_progress, as_json):
    """Train weights and connectivity of MODEL (a registered name or a masked checkpoint)."""
    from ..train.loop import train
    import os
    out = out or os.path.join("runs", os.path.splitext(os.path.basename(model))[0])
    cfg = TrainConfig(model=model, data=data, data_dir=data_dir, out=out, fan_in=fan_in, init=init,
                      connectivity=connectivity, epochs=epochs, batch_size=batch_size, lr=lr,
                      mask_lr=mask_lr, mask_grad=mask_grad, aggregate=aggregate,
                      weight_decay=weight_decay, schedule=schedule,
                      freeze_at=freeze_at, device=device, channels_last=channels_last, seed=seed,
                      resume=resume, max_steps=max_steps, max_train_samples=max_train_samples,
                      progress=not (no_progress or as_json))
    res = train(cfg)
    summary = {"out": res.out, "epochs_done": res.epochs_done, "steps": res.steps,
               "best_test_acc": res.best_acc, "last_test_acc": res.last_acc,
               "seconds": round(res.seconds, 1), "stopped": res.stopped,
               "best": f"{res.out}/best.pt", "last": f"{res.out}/last.pt"}
    if as_json:
        emit_json(summary)
    else:
        click.echo(table(list(summary.items()), ["", "value"]))
