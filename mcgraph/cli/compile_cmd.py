"""mcgraph compile masked.pt -o model.onnx [--precision fp16|int8 --data D]"""
from __future__ import annotations

import click

from ..config import CompileConfig
from ..jobs import compile_checkpoint
from . import main
from ._common import config_option, emit_json, table, trust_code_option

C = CompileConfig


@main.command("compile", short_help="Compile a checkpoint to ONNX.")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@config_option(C, "out", "-o", "--out", required=True, type=click.Path(dir_okay=False),
               help="ONNX file to write (at --precision).")
@config_option(C, "report", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip running the ONNX file in onnxruntime.")
@config_option(C, "opset", type=int)
@config_option(C, "precision", help="Of the file written; fp32 is always exported and verified "
                                    "first. int8: static QDQ quantization, needs --data.")
@config_option(C, "data", help="fashion-mnist | cifar10 | cifar100 | imagefolder:DIR | synthetic: "
                               "int8 calibrates on its training split; each precision's top-1 "
                               "on its test split goes in the report.")
@config_option(C, "data_dir", help="Where the data set's files are.")
@config_option(C, "calib_images", type=int, help="int8: training images to calibrate on.")
@config_option(C, "calib_seed", type=int, help="int8: seed of the calibration subset.")
@config_option(C, "per_channel", "--per-channel/--per-tensor",
               help="int8: one weight scale per output channel, or one per tensor.")
@config_option(C, "int8_scheme", help="int8: u8s8 (uint8 activations, 7-bit weights: fast "
                                      "without VNNI) or s8s8.")
@config_option(C, "eval_images", type=int,
               help="With --data: top-1 on the first N test images (default all).")
@trust_code_option()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile_cmd(checkpoint, out, report, no_verify, opset, precision, data, data_dir, calib_images,
                calib_seed, per_channel, int8_scheme, eval_images, trust_code, as_json):
    """Compile a checkpoint to ONNX: freeze the masks, remove what no block reads, export, verify.

    \b
    mcgraph compile runs/r20/best.pt -o model.onnx
    mcgraph compile runs/r20/best.pt -o model.int8.onnx --precision int8 --data fashion-mnist

    The fp32 export is always checked against PyTorch in onnxruntime; --precision fp16 or int8
    converts that file (fp16 checked within a tolerance, int8 shown with its loss). A checkpoint
    whose masks are still learning, or whose top-K is a tie, is refused (with --data, learning
    masks are frozen and BatchNorm re-estimated). The file carries its input contract in its
    metadata (docs/onnx-contract.md)."""
    cfg = CompileConfig(checkpoint=checkpoint, out=out, report=report, verify=not no_verify,
                        opset=opset, precision=precision, data=data, data_dir=data_dir,
                        calib_images=calib_images, calib_seed=calib_seed, per_channel=per_channel,
                        int8_scheme=int8_scheme,
                        eval_images=eval_images, trust_code=trust_code)
    if not as_json:
        click.echo("compiling ...", err=True)
    rep = compile_checkpoint(cfg)
    if as_json:
        emit_json(rep.to_dict())
        return
    d = rep.to_dict()
    ops, passes, notes = d.pop("onnx_ops"), d.pop("passes"), d.pop("notes")
    d.pop("wiring")
    d["removed"] = ", ".join(d["removed"]) or "-"
    d["onnx_ops"] = ", ".join(f"{k}:{v}" for k, v in ops.items())
    d["passes"] = ", ".join(f"{p['name']} (diff {p['max_abs_diff']:.1e})"
                            if p["max_abs_diff"] is not None else p["name"] for p in passes)
    d["quantization"] = ", ".join(f"{k} {v}" for k, v in d["quantization"].items()) or "-"
    for key in ("top1", "agreement"):
        d[key] = ", ".join(f"{k} {v:.2f}%" for k, v in d[key].items()) or "-"
    click.echo(table(list(d.items()), ["", "value"]))
    click.echo(f"wiring: {rep.wiring}")
    for line in verdict(rep, cfg.verify):
        click.echo(line)
    for note in notes:
        click.echo(f"note: {note}")


def verdict(rep, verified: bool) -> list[str]:
    """What was checked, never more: the fp32 export against PyTorch; fp16 within a tolerance of
    fp32; int8 is lossy, so its difference and (with --data) accuracy and agreement are shown,
    never called verified."""
    out = [f"verified: the fp32 ONNX export matches PyTorch in onnxruntime (max |diff| "
           f"{rep.onnx_max_abs_diff:.2g})" if verified and rep.onnx_max_abs_diff is not None
           else "not verified (--no-verify)"]
    if rep.precision == "fp16" and rep.precision_max_abs_diff is not None:
        out.append(f"fp16: within tolerance of fp32 (max |diff| {rep.precision_max_abs_diff:.2g})")
    if rep.precision == "int8":
        diff = rep.precision_max_abs_diff
        line = "int8 is lossy, not verified" + (f": max |diff| {diff:.2g} from fp32"
                                                if diff else "")
        if "int8" in rep.top1 and "fp32" in rep.top1:
            loss = rep.top1["fp32"] - rep.top1["int8"]
            line += (f"; top-1 {rep.top1['int8']:.2f}% against fp32's {rep.top1['fp32']:.2f}% "
                     f"({-loss:+.2f} points), same prediction as fp32 on "
                     f"{rep.agreement.get('int8', float('nan')):.2f}% of images")
        else:
            line += "; give --data to measure its accuracy and agreement with fp32"
        out.append(line)
    return out
