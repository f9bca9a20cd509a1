"""mcgraph demo"""
from __future__ import annotations

import click

from ..demo import DemoConfig, run_demo
from . import main
from ._common import config_option, emit_json, table

C = DemoConfig


@main.command("demo", short_help="Run the main job end to end.")
@config_option(C, "model")
@config_option(C, "data")
@config_option(C, "data_dir")
@config_option(C, "fan_in", "--fan-in", "-k", type=int)
@config_option(C, "init", help="Initial masks (default: uniform).")
@config_option(C, "epochs", type=int)
@config_option(C, "batch_size", type=int)
@config_option(C, "mask_lr", type=float)
@config_option(C, "mask_constraint")
@config_option(C, "freeze_at", type=float)
@config_option(C, "augment", "--augment/--no-augment",
               help="Random crop and flip of training batches.")
@config_option(C, "retrain", "--retrain/--no-retrain", help="Retrain the learned wiring from fresh "
               "weights (default; Table 1 of docs/results.md).")
@config_option(C, "search_epochs", type=int,
               help="Epochs of the connectivity search (with --retrain).")
@config_option(C, "search_samples", type=int,
               help="Training images the search uses (with --retrain).")
@config_option(C, "out")
@config_option(C, "device")
@config_option(C, "seed", type=int)
@config_option(C, "max_train_samples", type=int,
               help="Training images of the final training (default: all).")
@click.option("--json", "as_json", is_flag=True)
def demo_cmd(as_json, **options):
    """Run the main job end to end on Fashion-MNIST: rewrite, learn, compile, export, evaluate.

    \b
    mcgraph demo --out demo-out

    resnet20 with K=1 connectivity; prints accuracy in PyTorch and onnxruntime, size, latency,
    and the original network's accuracy at the same budget where it was measured on this kind of
    CPU."""
    cfg = DemoConfig(progress=not as_json, **options)
    res = run_demo(cfg, log=(lambda s: None) if as_json else (lambda s: click.echo(s, err=True)))
    if as_json:
        emit_json(res)
        return
    rows = [
        *([["test accuracy, connectivity search", f"{res['search_test_acc']:.2f}%", ""]]
          if res["retrained"] else []),
        ["test accuracy (PyTorch)", f"{res['test_acc_pytorch']:.2f}%", ""],
        ["test accuracy (onnxruntime)", f"{res['test_acc_onnxruntime']:.2f}%", ""],
        ["parameters", f"{res['params_before']:,}", f"{res['params_after']:,}"],
        ["modules", res["modules_before"], res["modules_after"]],
        ["latency batch 1 (ms)", f"{res['latency_ms_b1_original']:.3f}",
         f"{res['latency_ms_b1_compiled']:.3f}"],
        ["latency batch 64 (ms)", f"{res['latency_ms_b64_original']:.2f}",
         f"{res['latency_ms_b64_compiled']:.2f}"],
        ["removed modules", ", ".join(res["removed"]) or "none", ""],
        ["time (train / total, s)", res["train_seconds"], res["total_seconds"]],
    ]
    click.echo(table(rows, ["", "original / value", "compiled"]))
    click.echo(baseline_line(res))
    click.echo(f"onnx: {res['onnx_path']}\npng:  {res['png_path']}\n"
               f"checkpoint: {res['checkpoint']}")


def baseline_line(res: dict) -> str:
    """The Fixed-Prev figure of the demo's budget: compared only when it trained on this kind of
    CPU (the same seed differs by about a point between CPU kinds)."""
    b = res["baseline"]
    if not b["found"]:
        return f"(no Fixed-Prev comparison: {b['why']})"
    spread = f" +/- {b['test_acc_std']:.2f}" if b["test_acc_std"] is not None else ""
    fixed = (f"Fixed-Prev (the original {res['model']}, every block) with this budget, "
             f"{b['seeds']} seeds: {b['test_acc_mean']:.2f}%{spread}")
    if not b["comparable"]:
        return (f"{fixed}, trained on {b['trained_on']}; this machine is {b['this_machine']}, "
                "where results differ by about a point: not comparable (docs/results.md).")
    verdict = "gained" if b["gain_points"] >= 0 else "lost"
    return (f"{fixed} on this kind of CPU. This run {verdict} {abs(b['gain_points']):.2f} points "
            f"with {res['params_after']:,} of {res['params_before']:,} parameters and "
            f"{res['latency_ms_b64_original'] / res['latency_ms_b64_compiled']:.2f}x the batch-64 "
            "speed (docs/results.md).")
