"""mcgraph compile masked.pt -o model.onnx"""
from __future__ import annotations

import click

from ..config import CompileConfig
from ..jobs import compile_checkpoint
from . import main
from ._common import config_option, emit_json, table

C = CompileConfig


@main.command("compile")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@config_option(C, "out", "-o", "--out", required=True, type=click.Path(dir_okay=False),
               help="ONNX file to write.")
@config_option(C, "report", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip running the ONNX file in onnxruntime.")
@config_option(C, "opset", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile_cmd(checkpoint, out, report, no_verify, opset, as_json):
    """Freeze masks, remove unread modules, export ONNX and verify it in onnxruntime."""
    cfg = CompileConfig(checkpoint=checkpoint, out=out, report=report, verify=not no_verify, opset=opset)
    if not as_json:
        click.echo("compiling ...", err=True)
    rep = compile_checkpoint(cfg)
    if as_json:
        emit_json(rep.to_dict())
        return
    d = rep.to_dict()
    ops, passes = d.pop("onnx_ops"), d.pop("passes")
    d["removed"] = ", ".join(d["removed"]) or "-"
    d["onnx_ops"] = ", ".join(f"{k}:{v}" for k, v in ops.items())
    d["passes"] = ", ".join(f"{p['name']} (diff {p['max_abs_diff']:.1e})" if p["max_abs_diff"] is not None
                            else p["name"] for p in passes)
    click.echo(table(list(d.items()), ["", "value"]))
    click.echo("verified: onnxruntime matches PyTorch" if cfg.verify else "not verified (--no-verify)")
