"""Sweep: rewrite residual networks from torchvision and timm with no block names given.

Per network (random init, --input-size, 10 classes):
  1. discovery: the blocks found by structure (rewrite at K=1 'prev', module level) and the
     relative max difference of its eval outputs from the original's (goal: < 1e-5);
  2. a random K=2 rewrite (level auto: branch level for grouped bottlenecks), frozen and compiled:
     parameters before/after, and the ONNX export checked in onnxruntime against the frozen model.
Networks out of scope (non-residual transitions between blocks) show the refusal's reason.
Networks over 1 GB of fp32 weights are skipped.

    python benchmarks/sweep_models.py --md docs/models.md      # a few minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import mcgraph
from mcgraph.api import build
from mcgraph.jobs import verify_onnx

TORCHVISION = ["resnet18", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "regnet_x_400mf",
               "regnet_y_400mf", "regnet_y_1_6gf", "mobilenet_v2", "convnext_tiny",
               "efficientnet_b0"]
TIMM = ["resnet18", "resnet26d", "resnet50d", "seresnet50", "ecaresnet26t", "res2net50_14w_8s",
        "regnetx_002", "regnety_002", "resnext26ts", "wide_resnet50_2", "resnext50_32x4d",
        "seresnext26d_32x4d", "convnext_atto"]
MAX_BYTES = 1 << 30


def sweep_one(spec: str, size: tuple[int, int]) -> dict:
    row: dict = {"model": spec}
    torch.manual_seed(0)
    model, _, _, x1 = build(spec, None, 10, None, None, size, None)
    params = sum(p.numel() for p in model.parameters())
    row["params"] = params
    if params * 4 > MAX_BYTES:
        row["status"] = "skipped: over 1 GB of weights"
        return row
    model.eval()
    t0 = time.perf_counter()
    try:
        prev = mcgraph.rewrite(model, 1, "prev", example_input=x1, level="module")
    except mcgraph.McGraphError as e:
        row["status"] = f"refused: {e}"
        return row
    dag = mcgraph.dag_of(prev)
    row["blocks"] = len(dag.blocks())
    row["block_types"] = sorted({type(prev.get_submodule(b)).__name__ for b in dag.blocks()})
    x = torch.randn(2, *x1.shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x), prev.eval()(x)
    row["prev_rel_diff"] = float((ref - got).abs().max() / ref.abs().max())
    masked = mcgraph.rewrite(model, 2, "random", seed=0, example_input=x1)
    mcgraph.freeze(masked)
    row["level"] = mcgraph.dag_of(masked).level
    slim, report = mcgraph.compile(masked)
    row["params_before"], row["params_after"] = report.params_before, report.params_after
    with tempfile.TemporaryDirectory() as tmp:
        path = mcgraph.export_onnx(slim, Path(tmp) / "m.onnx", tuple(report.input_shape))
        row["onnx_diff"] = verify_onnx(masked, path)       # raises past 1e-4 of the output scale
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["status"] = "ok" if row["prev_rel_diff"] < 1e-5 else "prev differs"
    return row


def markdown(rows: list[dict], size: tuple[int, int], machine: str = "") -> str:
    out = ["# Networks tried", "",
           "Made by `python benchmarks/sweep_models.py --md docs/models.md` (not part of `make "
           f"test`){machine}. No block names were given: blocks are found by structure "
           "(docs/design.md §9).", "",
           f"Input {size[0]}x{size[1]}, 10 classes, random init. `prev` = max |K=1 prev - "
           "original| "
           "/ max |original| (eval); params after a random K=2 compile (module level: dead "
           "blocks removed; branch level: dead branches); ONNX: onnxruntime vs the frozen model.",
           "", "| network | blocks found (types) | level (K=2) | prev rel. diff | params before "
           "| params after K=2 | ONNX verified | result |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "blocks" not in r:
            out.append(f"| {r['model']} | - | - | - | {r['params']:,} | - | - | {r['status']} |")
            continue
        out.append(f"| {r['model']} | {r['blocks']} ({', '.join(r['block_types'])}) | {r['level']} "
                   f"| {r['prev_rel_diff']:.1e} | {r['params_before']:,} | {r['params_after']:,} "
                   f"| yes ({r['onnx_diff']:.1e}) | {r['status']} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-size", type=int, default=80, help="square input side (default 80: "
                    "not a power of two, so composed strides matter)")
    ap.add_argument("--only", nargs="*", help="sources to sweep (default: the built-in lists)")
    ap.add_argument("--md", help="also write the markdown table here")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--from-json", help="render the rows of an earlier --json run, run nothing")
    a = ap.parse_args()
    size = (a.input_size, a.input_size)
    import platform
    machine = (f" on {platform.machine()}, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}")
    if a.from_json:
        md = markdown(json.loads(Path(a.from_json).read_text()), size, machine)
        print(md)
        if a.md:
            Path(a.md).write_text(md)
        return 0
    specs = a.only or [f"torchvision:{n}" for n in TORCHVISION]
    if not a.only:
        try:
            import timm  # noqa: F401
            specs += [f"timm:{n}" for n in TIMM]
        except ImportError:
            print("timm is not installed: sweeping torchvision only", file=sys.stderr)
    rows = []
    for spec in specs:
        try:
            row = sweep_one(spec, size)
        except mcgraph.McGraphError as e:
            row = {"model": spec, "params": 0, "status": f"failed: {e}"}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    md = markdown(rows, size, machine)
    print(md)
    if a.md:
        Path(a.md).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["status"] == "ok" or r["status"].startswith(("refused", "skipped"))
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
