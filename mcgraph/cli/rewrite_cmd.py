"""mcgraph rewrite MODEL --fan-in K -o masked.pt"""
from __future__ import annotations

import click

from ..config import RewriteConfig
from ..errors import McGraphError
from ..explain import explain as explain_model
from ..jobs import rewrite_to_checkpoint
from . import main
from ._common import config_option, emit_json, explain_table, model_arg_option, parse_size, table

C = RewriteConfig
@main.command("rewrite", short_help="Rewrite a network with learnable masks.")
@click.argument("model")
@config_option(C, "fan_in", "--fan-in", "-k", type=int, help="K: inputs each module reads "
               "(required unless only --explain).")
@config_option(C, "init",
               help="Initial real-valued masks; 'prev' with K=1 is the original network.")
@model_arg_option()
@config_option(C, "num_classes", type=int, help="Classes of the head (default: the model's own; "
               "10 for a registered name).")
@config_option(C, "in_channels", type=int, help="Input channels of the stem (default: the "
               "model's own; 3 for a registered name).")
@click.option("--input-size", default=None, help="HxW the model will see (default: 32x32 for "
              "CIFAR models, files and modules, 224x224 for torchvision's, timm's from its "
              "config).")
@config_option(C, "seed", type=int)
@config_option(C, "weights", type=click.Path(dir_okay=False),
               help="A local state_dict for the original model.")
@click.option("--modules", multiple=True, help="Block type or qualified module name to treat as a "
              "MaskConnect module (repeatable); default: every module of residual form "
              "act(F(x) + S(x)) called once on the main path, found by tracing.")
@config_option(C, "mask_grad", help="Mask gradient: 'centered' drops the part common to all "
               "candidates; 'raw' is the paper's.")
@config_option(C, "aggregate", help="How a module combines its K inputs (equal for K=1).")
@config_option(C, "level",
               help="Masks between blocks (module) or between ResNeXt branches (branch).")
@config_option(C, "out", "-o", "--out", type=click.Path(dir_okay=False),
               help="Checkpoint to write (required unless only --explain).")
@click.option("--explain", is_flag=True, help="Show why each module is a block or not, and the "
              "inputs no adapter can reach; with -o, rewrite too.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def rewrite_cmd(model, input_size, modules, explain, as_json, **options):
    """Rewrite a network so every block reads a learnable K-sparse sum of earlier blocks' outputs.

    \b
    mcgraph rewrite resnet20 -k 1 --in-channels 1 --input-size 28x28 -o masked.pt
    mcgraph rewrite path/to/net.py:make --explain

    MODEL is a registered name, torchvision:NAME, timm:NAME, path/file.py:factory or
    package.module:factory (the factory is called with the --model-arg values)."""
    size, mods = parse_size(input_size), tuple(modules) or None
    if explain:
        ex = explain_model(model, input_size=size, modules=mods,
                           model_args=dict(options["model_args"]),
                           num_classes=options["num_classes"],
                           in_channels=options["in_channels"], weights=options["weights"],
                           level=options["level"])
        if as_json and not options["out"]:
            emit_json(ex.to_dict())
        elif not as_json:
            click.echo(explain_table(ex))
        if ex.error:
            raise McGraphError("rewrite", f"refused: {ex.error}")
        if not options["out"]:
            return
    for opt in ("fan_in", "out"):
        if options[opt] is None:
            raise click.UsageError(f"Missing option '--{opt.replace('_', '-')}' (needed to "
                                   "rewrite; only --explain runs without it).")
    cfg = RewriteConfig(model=model, input_size=size, modules=mods, **options)
    summary = rewrite_to_checkpoint(cfg)
    if as_json:
        emit_json(summary)
    else:
        click.echo(table(list(summary.items()), ["", "value"]))
