"""GPU benchmark, side by side in one run: the trainer's step (eager and as a CUDA graph) for the
plain network and learning masks, and inference of compiled vs original models in PyTorch and
in onnxruntime's CUDA provider.

    python benchmarks/bench_gpu.py train [--models resnet20 resnet110] [--batch 128] [--json F]
    python benchmarks/bench_gpu.py infer DIR [DIR ...] [--batches 1 256] [--json F]

``train``: every variant steps through :class:`mcgraph.train.step.Stepper`, the trainer's own
optimizer and step (autocast with the trainer's dtype, channels-last, the mask constraint).
"plain" is what a Fixed-Prev run steps (the rewrite lowered to the original network), "learned
K" the masked network learning its masks. Timed: the median of per-step wall times with a sync
after each (the trainer reads the loss every step), variants interleaved repeat by repeat, after
each has been captured. Peak memory is ``torch.cuda.max_memory_allocated`` over one step.

``infer``: each DIR holds a trained checkpoint ``best.pt`` and the original network rewritten
with the original wiring, ``orig.pt`` (``mcgraph rewrite NAME -k 1 --init prev``), and their ONNX
files (``slim.onnx``, ``orig.onnx``; ``*.fp16.onnx`` beside them for fp16: ``mcgraph compile``).
Both models run compiled in PyTorch on the device (fp32 and fp16) and in onnxruntime with
device-resident I/O (IOBinding on the CUDA provider).
Without CUDA both run on the CPU with tiny sizes, as a smoke test, and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import print_table  # noqa: E402

import mcgraph  # noqa: E402
from mcgraph import deploy  # noqa: E402
from mcgraph.train.build import apply_connectivity, training_view  # noqa: E402
from mcgraph.train.config import TrainConfig  # noqa: E402
from mcgraph.train.step import WARMUP, Stepper  # noqa: E402

MiB = 2 ** 20


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _variant(model: str, kind: str, graphs: bool, dev: torch.device, size: int) -> Stepper:
    """A Stepper for 'plain' (Fixed-Prev's lowered network) or 'learned-kK'."""
    k = 1 if kind == "plain" else int(kind.rsplit("k", 1)[1])
    init = "prev" if kind == "plain" else "uniform"
    gm = mcgraph.rewrite(model, k, init, num_classes=10, in_channels=1, input_size=(size, size))
    if kind == "plain":
        gm = apply_connectivity(gm, "fixed-prev", 0)
    gm = gm.to(dev, memory_format=torch.channels_last).train()
    cfg = TrainConfig(model=model, device=dev.type, cuda_graph=graphs and dev.type == "cuda")
    st = Stepper(gm, cfg, dev)
    st.set_net(training_view(gm) if kind == "plain" else gm)
    return st


def train_part(args, dev: torch.device) -> list[dict[str, Any]]:
    rows = []
    for model in args.models:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, 1, args.size, args.size, generator=g).to(dev)
        y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
        modes = ["eager", "graph"] if dev.type == "cuda" else ["eager"]
        steppers = {(k, m): _variant(model, k, m == "graph", dev, args.size)
                    for k in args.variants for m in modes}
        peak = {}
        for key, st in steppers.items():           # warm-up, capture, then one measured step
            for _ in range(WARMUP + 2):
                st.step(x, y)
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                st.step(x, y)
                _sync(dev)
                peak[key] = (torch.cuda.max_memory_allocated(dev) - base) / MiB
        times: dict[tuple, list[float]] = {key: [] for key in steppers}
        for _ in range(args.repeats):               # interleaved: drift lands on all alike
            for key, st in steppers.items():
                t = time.perf_counter()
                loss, _, _ = st.step(x, y)
                float(loss)                         # the trainer reads the loss every step
                times[key].append((time.perf_counter() - t) * 1e3)
        plain = {m: statistics.median(times[("plain", m)]) for m in modes if ("plain", m) in times}
        for (kind, mode), t in times.items():
            ms = statistics.median(t)
            rows.append({"model": model, "variant": kind, "mode": mode, "step_ms": ms,
                         "images_per_s": args.batch / ms * 1e3,
                         "x_plain_same_mode": ms / plain[mode] if mode in plain else None,
                         "x_plain_eager": ms / plain["eager"] if "eager" in plain else None,
                         "graph_captured": steppers[(kind, mode)]._graph is not None,
                         "step_mib": peak.get((kind, mode))})
        del steppers
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    print_table([[r["model"], r["variant"], r["mode"] + ("" if r["mode"] == "eager" or
                                                         r["graph_captured"] else " (failed)"),
                  r["step_ms"], r["images_per_s"], r["x_plain_same_mode"], r["x_plain_eager"],
                  r["step_mib"] or "-"] for r in rows],
                ["model", "variant", "mode", "step ms", "img/s", "x plain (same mode)",
                 "x plain eager", "step MiB"])
    return rows


def _torch_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        _sync(x.device)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            _sync(x.device)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def infer_part(args, dev: torch.device) -> list[dict[str, Any]]:
    rows = []
    ort_dev = "cuda" if dev.type == "cuda" else "cpu"
    for d in map(Path, args.dirs):
        for label, ckpt, onnx in (("original", "orig.pt", "orig"), ("compiled", "best.pt", "slim")):
            model, report = mcgraph.compile(mcgraph.load(d / ckpt))
            shape = tuple(report.input_shape)
            m32 = model.to(dev).eval()
            for b in args.batches:
                x = torch.randn(b, *shape)
                row = {"model": d.name, "which": label, "batch": b,
                       "params": report.params_after,
                       "torch_fp32_ms": _torch_ms(m32, x.to(dev), args.repeats)}
                if dev.type == "cuda":
                    row["torch_fp16_ms"] = _torch_ms(m32.half(), x.to(dev).half(), args.repeats)
                    m32.float()
                for prec, p in (("fp32", d / f"{onnx}.onnx"), ("fp16", d / f"{onnx}.fp16.onnx")):
                    if p.is_file() and (prec == "fp32" or ort_dev == "cuda"):
                        sess = deploy.make_session(p, ort_dev)
                        row[f"ort_{prec}_ms"] = deploy.latency_ms(sess, (b, *shape), args.repeats)
                        row["provider"] = sess.get_providers()[0]
                rows.append(row)
    cols = ["torch_fp32_ms", "torch_fp16_ms", "ort_fp32_ms", "ort_fp16_ms"]
    print_table([[r["model"], r["which"], r["batch"], r["params"]] +
                 [r.get(c, "-") for c in cols] for r in rows],
                ["model", "which", "batch", "params", "torch fp32 ms", "torch fp16 ms",
                 "ort fp32 ms", "ort fp16 ms"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["train", "infer"])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet110"])
    ap.add_argument("--variants", nargs="+", default=["plain", "learned-k1", "learned-k4"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("dirs", nargs="*", help="infer: directories of models (see above)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--json", help="Write the rows here.")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        print("no CUDA device: a smoke run on the CPU (tiny sizes; not a GPU measurement)")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, onnxruntime providers "
          f"{deploy.providers('auto')}")
    rows = train_part(args, dev) if args.part == "train" else infer_part(args, dev)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "argv": sys.argv[1:], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
