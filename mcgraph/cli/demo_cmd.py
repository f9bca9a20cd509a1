"""mcgraph demo"""
from __future__ import annotations

import click

from ..demo import DemoConfig, run_demo
from ..masks import INITS
from . import main
from ._common import emit_json, table

D = DemoConfig.__dataclass_fields__


@main.command("demo")
@click.option("--model", default=D["model"].default, show_default=True)
@click.option("--data", default=D["data"].default, show_default=True)
@click.option("--data-dir", default=None)
@click.option("--fan-in", "-k", type=int, default=D["fan_in"].default, show_default=True)
@click.option("--init", type=click.Choice(INITS), default=D["init"].default,
              help="Initial masks (default: uniform).")
@click.option("--epochs", type=int, default=D["epochs"].default, show_default=True)
@click.option("--batch-size", type=int, default=D["batch_size"].default, show_default=True)
@click.option("--mask-lr", type=float, default=D["mask_lr"].default, show_default=True)
@click.option("--freeze-at", type=float, default=D["freeze_at"].default, show_default=True)
@click.option("--out", default=D["out"].default, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-train-samples", type=int, default=None, help="For a quick look: fewer images.")
@click.option("--json", "as_json", is_flag=True)
def demo_cmd(model, data, data_dir, fan_in, init, epochs, batch_size, mask_lr, freeze_at, out, device, seed,
             max_train_samples, as_json):
    """Rewrite, train connectivity, compile, export and deploy, end to end on Fashion-MNIST."""
    cfg = DemoConfig(model=model, data=data, data_dir=data_dir, fan_in=fan_in, init=init, epochs=epochs,
                     batch_size=batch_size, mask_lr=mask_lr, freeze_at=freeze_at, out=out, device=device, seed=seed,
                     max_train_samples=max_train_samples, progress=not as_json)
    res = run_demo(cfg, log=(lambda s: None) if as_json else (lambda s: click.echo(s, err=True)))
    if as_json:
        emit_json(res)
        return
    rows = [
        ["test accuracy (PyTorch)", f"{res['test_acc_pytorch']:.2f}%", ""],
        ["test accuracy (onnxruntime)", f"{res['test_acc_onnxruntime']:.2f}%", ""],
        ["parameters", f"{res['params_before']:,}", f"{res['params_after']:,}"],
        ["modules", res["modules_before"], res["modules_after"]],
        ["latency batch 1 (ms)", f"{res['latency_ms_b1_original']:.3f}", f"{res['latency_ms_b1_compiled']:.3f}"],
        ["latency batch 64 (ms)", f"{res['latency_ms_b64_original']:.2f}", f"{res['latency_ms_b64_compiled']:.2f}"],
        ["removed modules", ", ".join(res["removed"]) or "none", ""],
        ["time (train / total, s)", res["train_seconds"], res["total_seconds"]],
    ]
    click.echo(table(rows, ["", "original / value", "compiled"]))
    click.echo(f"onnx: {res['onnx_path']}\npng:  {res['png_path']}\ncheckpoint: {res['checkpoint']}")
