"""mcgraph rewrite MODEL --fan-in K -o masked.pt"""
from __future__ import annotations

import click

from ..config import RewriteConfig
from ..masks import AGGREGATES, GRADS, INITS
from ..pipeline import rewrite_to_checkpoint
from . import main
from ._common import emit_json, parse_size, table


@main.command("rewrite")
@click.argument("model")
@click.option("--fan-in", "-k", type=int, required=True, help="K: inputs each module reads.")
@click.option("--init", type=click.Choice(INITS), default="uniform", show_default=True,
              help="Initial real-valued masks; 'prev' with K=1 is the original network.")
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--in-channels", type=int, default=3, show_default=True)
@click.option("--input-size", default=None, help="HxW the model will see (default: 32x32 for "
              "CIFAR models, 224x224 for torchvision's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="A local state_dict for the original model.")
@click.option("--modules", multiple=True, help="Block type or qualified module name to treat as a "
              "MaskConnect module (repeatable); default: ResNet blocks.")
@click.option("--mask-grad", type=click.Choice(GRADS), default="normalized", show_default=True,
              help="Mask gradient: 'centered' drops the part common to all candidates; 'raw' is the paper's.")
@click.option("--aggregate", type=click.Choice(AGGREGATES), default="mean", show_default=True,
              help="How a module combines its K inputs (equal for K=1).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def rewrite_cmd(model, fan_in, init, num_classes, in_channels, input_size, seed, weights, modules,
                mask_grad, aggregate, out, as_json):
    """Rewrite MODEL so every block reads a learnable K-sparse sum of earlier blocks."""
    cfg = RewriteConfig(model=model, fan_in=fan_in, out=out, init=init, num_classes=num_classes,
                        in_channels=in_channels, input_size=parse_size(input_size), seed=seed,
                        weights=weights, modules=tuple(modules) or None,
                        mask_grad=mask_grad, aggregate=aggregate)
    summary = rewrite_to_checkpoint(cfg)
    if as_json:
        emit_json(summary)
    else:
        click.echo(table(list(summary.items()), ["", "value"]))
