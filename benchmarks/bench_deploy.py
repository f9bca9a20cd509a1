"""The deployment tables: compiled models against their MACs, onnxruntime against PyTorch
eager, int8 against fp32, each measured side by side in one run.

    python benchmarks/bench_deploy.py                      # what `make bench` prints
    python benchmarks/bench_deploy.py --models resnet20 --ks 1,2 --seeds 11 --repeats 10
    python benchmarks/bench_deploy.py --checkpoint run/best.pt --data fashion-mnist   # + top-1

Protocol: random K-hot masks (``--seeds``), rewritten and compiled through the CLI
(``mcgraph rewrite --init random``, ``mcgraph compile``), 1x28x28 inputs, ``--threads`` intra-op
threads. Compiled and original run interleaved (:func:`mcgraph.bench.benchmark`); MACs are
counted from each ONNX graph. "plain" is the same compile without the inference rewrites
(``mcgraph.compile(optimize=False)``), shown so the rewrites' effect is measured, not assumed.
The original ResNet is ``--init prev -k 1`` compiled (it computes the original network); the
original ResNeXt is the registered model exported as is.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, time_steps  # noqa: E402

import mcgraph  # noqa: E402
from mcgraph import deploy  # noqa: E402
from mcgraph.bench import BenchConfig, benchmark  # noqa: E402
from mcgraph.models import create_model  # noqa: E402

SHAPE = (1, 28, 28)
GOALS = {1: 1.10, 2: 1.10, 4: 1.25}          # latency ratio <= goal x MAC ratio


def cli(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "mcgraph", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"mcgraph {' '.join(args)} failed: {r.stderr.strip()}")


def original(model: str, tmp: Path) -> Path:
    path = tmp / f"{model}-original.onnx"
    if path.exists():
        return path
    if model.startswith("resnext"):
        net = create_model(model, num_classes=10, in_channels=1).eval()
        mcgraph.export_onnx(net, path, SHAPE)
    else:
        cli("rewrite", model, "-k", "1", "--init", "prev", "--in-channels", "1", "--input-size",
            "28x28", "-o", str(tmp / f"{model}-prev.pt"))
        cli("compile", str(tmp / f"{model}-prev.pt"), "-o", str(path), "--no-verify")
    return path


def compiled(model: str, k: int, seed: int, tmp: Path) -> tuple[Path, Path]:
    ckpt, out, plain = (tmp / f"{model}-k{k}-s{seed}.{ext}" for ext in ("pt", "onnx", "plain.onnx"))
    cli("rewrite", model, "-k", str(k), "--init", "random", "--seed", str(seed),
        "--in-channels", "1", "--input-size", "28x28", "-o", str(ckpt))
    cli("compile", str(ckpt), "-o", str(out))
    slim, _ = mcgraph.compile(mcgraph.load(ckpt), optimize=False)
    mcgraph.export_onnx(slim, plain, SHAPE)
    return out, plain


def macs_table(args, tmp: Path) -> None:
    rows = []
    for model in args.models:
        base = original(model, tmp)
        ks = [1] if model.startswith("resnext") else args.ks
        for k in ks:
            for seed in args.seeds:
                out, plain = compiled(model, k, seed, tmp)
                cfg = BenchConfig(models=(str(out), str(plain)), baseline=str(base),
                                  batch_sizes=(args.batch,), repeats=args.repeats,
                                  threads=args.threads)
                _, fast, slow = benchmark(cfg)
                b = str(args.batch)
                f, s = fast["vs_baseline"][b], slow["vs_baseline"][b]
                goal = 1.25 if model.startswith("resnext") else GOALS.get(k)
                # ResNeXt: judged against the pruned model's MACs (the plain graph's); the
                # fused graph computes more (conv1 over dead streams, conv3 per stream)
                mac = s["macs"] if model.startswith("resnext") else f["macs"]
                per_mac = f["latency"] / mac
                rows.append([model, k, seed, fast["params"], f"{mac:.2f}x", f"{f['macs']:.2f}x",
                             f"{f['latency']:.2f}x", f"{per_mac:.2f}",
                             f"{s['latency'] / s['macs']:.2f}",
                             "-" if goal is None
                             else ("yes" if per_mac <= goal else f"no (<= {goal})")])
    print(f"\ncompiled vs original, onnxruntime, batch {args.batch}, {args.threads} threads, "
          f"{args.repeats} interleaved repeats")
    print_table(rows, ["model", "K", "seed", "ONNX params", "MAC ratio", "graph MAC ratio",
                       "latency ratio", "latency/MAC", "plain latency/MAC", "goal met"])


def eager_ms(model: torch.nn.Module, batch: int, repeats: int) -> float:
    x = torch.randn(batch, *SHAPE)
    with torch.inference_mode():
        return time_steps(lambda: model(x), warmup=5, repeats=repeats) * 1e3


def eager_table(args, tmp: Path) -> None:
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models:
        k = 1 if model.startswith("resnext") else 2
        ckpt = tmp / f"{model}-k{k}-s{args.seeds[0]}.pt"
        slim, _ = mcgraph.compile(mcgraph.load(ckpt))
        slim.eval()
        sess = deploy.make_session(tmp / f"{model}-k{k}-s{args.seeds[0]}.onnx", "cpu",
                                   args.threads, spin=False)
        for batch in (1, args.batch):
            reps = args.repeats * (5 if batch == 1 else 1)
            ort_ms, pt_ms = [], []
            for _ in range(3):                            # alternate the two, three rounds
                ort_ms.append(deploy.latency_ms(sess, (batch, *SHAPE), repeats=reps))
                pt_ms.append(eager_ms(slim, batch, reps))
            o, p = statistics.median(ort_ms), statistics.median(pt_ms)
            rows.append([model, k, batch, f"{p:.3f}", f"{o:.3f}", f"{p / o:.2f}x"])
    print(f"\ncompiled model: onnxruntime vs PyTorch eager (the compiled GraphModule), "
          f"{args.threads} threads")
    print_table(rows, ["model", "K", "batch", "eager ms", "onnxruntime ms", "onnxruntime speed-up"])


def precision_table(args, tmp: Path) -> None:
    """int8 (static QDQ, calibrated on training images) against fp32 at ``--batch``."""
    if args.checkpoint:
        ckpt, tag = Path(args.checkpoint), "trained"
    else:
        ckpt, tag = tmp / f"{args.models[0]}-k2-s{args.seeds[0]}.pt", "random masks, untrained"
    fp32, int8 = tmp / "prec-fp32.onnx", tmp / "prec-int8.onnx"
    cli("compile", str(ckpt), "-o", str(fp32))
    extra = ["--eval-images", str(args.eval_images)] if args.eval_images else []
    data = ["--data", args.data] + (["--data-dir", args.data_dir] if args.data_dir else [])
    cli("compile", str(ckpt), "-o", str(int8), "--precision", "int8", *data, *extra,
        "--report", str(tmp / "int8.json"))
    import json
    rep = json.loads((tmp / "int8.json").read_text())
    cfg = BenchConfig(models=(str(int8),), baseline=str(fp32), batch_sizes=(1, args.batch),
                      repeats=args.repeats, threads=args.threads)
    base, q = benchmark(cfg)
    rows = [[ckpt.name, tag, b, f"{base['latency_ms'][b]:.2f}", f"{q['latency_ms'][b]:.2f}",
             f"{base['latency_ms'][b] / q['latency_ms'][b]:.2f}x"] for b in ("1", str(args.batch))]
    top1 = rep.get("top1", {})
    print(f"\nint8 (QDQ, {rep.get('quantization', {})}) vs fp32, onnxruntime, "
          f"{args.threads} threads; top-1 on {args.data}'s test split: "
          + ", ".join(f"{k} {v:.2f}%" for k, v in top1.items()))
    print_table(rows, ["checkpoint", "weights", "batch", "fp32 ms", "int8 ms", "int8 speed-up"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet20,resnet56,resnext29_8x8d")
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--seeds", default="11,12")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--checkpoint", help="A trained checkpoint for the int8 row's top-1.")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--eval-images", type=int, default=0, help="0: the whole test split.")
    ap.add_argument("--only", choices=["macs", "eager", "precision"])
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.ks = [int(k) for k in args.ks.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, onnxruntime {deploy.ort.__version__}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "macs"):
            macs_table(args, tmp)
        if args.only in (None, "eager"):
            if args.only == "eager":
                for m in args.models:
                    compiled(m, 1 if m.startswith("resnext") else 2, args.seeds[0], tmp)
            eager_table(args, tmp)
        if args.only in (None, "precision"):
            first = tmp / f"{args.models[0]}-k2-s{args.seeds[0]}.pt"
            if not args.checkpoint and not first.exists():
                compiled(args.models[0], 2, args.seeds[0], tmp)
            precision_table(args, tmp)


if __name__ == "__main__":
    main()
