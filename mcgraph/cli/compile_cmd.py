"""mcgraph compile masked.pt -o model.onnx"""
from __future__ import annotations

import click

from ..config import CompileConfig
from ..pipeline import compile_checkpoint
from . import main
from ._common import emit_json, table


@main.command("compile")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write the report as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip running the ONNX file in onnxruntime.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile_cmd(checkpoint, out, report, no_verify, opset, as_json):
    """Freeze masks, remove unread modules, export ONNX and verify it in onnxruntime."""
    cfg = CompileConfig(checkpoint=checkpoint, out=out, report=report, verify=not no_verify, opset=opset)
    with _status("compiling", as_json):
        rep = compile_checkpoint(cfg)
    if as_json:
        emit_json(rep.to_dict())
        return
    d = rep.to_dict()
    ops = d.pop("onnx_ops")
    d["removed"] = ", ".join(d["removed"]) or "-"
    d["onnx_ops"] = ", ".join(f"{k}:{v}" for k, v in ops.items())
    click.echo(table(list(d.items()), ["", "value"]))
    click.echo("verified: onnxruntime matches PyTorch" if cfg.verify else "not verified (--no-verify)")


class _status:
    """A one-line note on stderr while a long step runs (silent with --json)."""

    def __init__(self, what: str, quiet: bool):
        self.what, self.quiet = what, quiet

    def __enter__(self):
        if not self.quiet:
            click.echo(f"{self.what} ...", err=True)

    def __exit__(self, *exc):
        return False
