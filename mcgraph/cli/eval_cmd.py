"""mcgraph eval (ckpt | model.onnx) --data ..."""
from __future__ import annotations

import click

from . import main
from ._common import emit_json, table, trust_code_option


@main.command("eval", short_help="Test accuracy of a checkpoint or ONNX file.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", default="fashion-mnist", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--max-samples", type=int, default=None,
              help="Evaluate the first N test images only.")
@trust_code_option()
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model, data, data_dir, batch_size, device, max_samples, trust_code, as_json):
    """Measure test accuracy, in percent, of a checkpoint (PyTorch) or an ONNX file (onnxruntime).

    \b
    mcgraph eval model.onnx --data fashion-mnist

    Refuses a model whose class count or input size is not the data set's; warns when the
    model was trained with another normalization or other class names than the data set's."""
    from ..evaluate import evaluate_path
    res = evaluate_path(model, data, data_dir=data_dir, batch_size=batch_size, device=device,
                        max_samples=max_samples, trust_code=trust_code)
    for line in res.get("warnings", []):      # stderr: stdout stays the table or the JSON
        click.echo(f"warning: {line}", err=True)
    if as_json:
        emit_json(res)
    else:
        click.echo(table([(k, v) for k, v in res.items() if k != "warnings"], ["", "value"]))
