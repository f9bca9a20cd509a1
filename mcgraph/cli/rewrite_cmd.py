"""mcgraph rewrite MODEL --fan-in K -o masked.pt"""
from __future__ import annotations

import click

from ..config import RewriteConfig
from ..jobs import rewrite_to_checkpoint
from . import main
from ._common import config_option, emit_json, parse_size, table

C = RewriteConfig


@main.command("rewrite")
@click.argument("model")
@config_option(C, "fan_in", "--fan-in", "-k", type=int, required=True, help="K: inputs each module reads.")
@config_option(C, "init", help="Initial real-valued masks; 'prev' with K=1 is the original network.")
@config_option(C, "num_classes", type=int)
@config_option(C, "in_channels", type=int)
@click.option("--input-size", default=None, help="HxW the model will see (default: 32x32 for "
              "CIFAR models, 224x224 for torchvision's).")
@config_option(C, "seed", type=int)
@config_option(C, "weights", type=click.Path(dir_okay=False), help="A local state_dict for the original model.")
@click.option("--modules", multiple=True, help="Block type or qualified module name to treat as a "
              "MaskConnect module (repeatable); default: ResNet blocks.")
@config_option(C, "mask_grad", help="Mask gradient: 'centered' drops the part common to all "
               "candidates; 'raw' is the paper's.")
@config_option(C, "aggregate", help="How a module combines its K inputs (equal for K=1).")
@config_option(C, "level", help="Masks between blocks (module) or between ResNeXt branches (branch).")
@config_option(C, "out", "-o", "--out", required=True, type=click.Path(dir_okay=False),
               help="Checkpoint to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def rewrite_cmd(model, input_size, modules, as_json, **options):
    """Rewrite MODEL so every block reads a learnable K-sparse sum of earlier blocks."""
    cfg = RewriteConfig(model=model, input_size=parse_size(input_size),
                        modules=tuple(modules) or None, **options)
    summary = rewrite_to_checkpoint(cfg)
    if as_json:
        emit_json(summary)
    else:
        click.echo(table(list(summary.items()), ["", "value"]))
