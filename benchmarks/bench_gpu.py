"""GPU benchmark: train-step cost of the masks (AMP, channels-last) and inference latency of
compiled vs original models, in PyTorch (fp32, fp16) and onnxruntime.

    python benchmarks/bench_gpu.py [--models resnet20 resnet110 resnext29_8x8d] [--batch 128]
                                   [--repeats 20] [--json bench_gpu.json]

Part a (train step), per model, side by side in one run: the plain network (create_model), the
masked network learning its masks (K=2, uniform init; branch level for ResNeXt) and the masked
network with frozen masks (top-K of seeded random masks, so some modules are unread, as after a
learned run). One step = autocast fp16 forward + loss, GradScaler backward, unscale, SGD (weights:
Nesterov, weight decay; masks: their own group, plain SGD, no weight decay, as the trainer does),
constrain_masks_ (the trainer's default: simplex projection). Channels-last input and model.
Step time is the median of CUDA-synchronized wall
times after warm-up; peak memory is torch.cuda.max_memory_allocated over one step (weights,
optimizer state and activations), "step MiB" the part above what was allocated before the step.

Part b (inference), per model: the original (create_model) and the compiled slim model
(mcgraph.compile of a frozen K=1 rewrite with seeded random masks, so modules/branches are
removed). PyTorch on the device in fp32 and in fp16 (model.half(), half inputs; not autocast),
eval mode, inference_mode, timed with CUDA events (median); then both exported to ONNX and timed
in onnxruntime with the provider mcgraph.deploy.make_session picks (printed) via
mcgraph.deploy.latency_ms.

Without CUDA it runs on the CPU with tiny sizes (a smoke test), and says so. Any single failing
measurement is recorded as an error in its row; the rest still runs.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import mcgraph
from mcgraph.ir import dag_of
from mcgraph.masks import sync_masks_to_host
from mcgraph.train.build import training_view  # noqa: E402
from mcgraph import deploy  # noqa: E402

try:   # what the trainer calls after GradScaler.unscale_ (not a stable API: optional)
    from mcgraph.masks import renormalize_mask_grads_ as _renormalize
except ImportError:  # pragma: no cover - moved by a refactor
    _renormalize = None

MiB = 2 ** 20


# ---------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(msg, flush=True)


def first_line(e: BaseException) -> str:
    s = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {s[:200]}"


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in ms, synchronizing the device around every call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def event_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median time of fn() in ms: CUDA events on CUDA (the device is idle before each call, so
    this includes launch gaps, i.e. it is the latency), perf_counter on the CPU."""
    if device.type != "cuda":
        return wall_ms(fn, device, warmup, repeats)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def out_of_time(args) -> bool:
    """--max-seconds: past it, the remaining measurements are skipped (rows say so)."""
    return args.deadline is not None and time.perf_counter() > args.deadline


def n_params(model: torch.nn.Module) -> int:
    mask_ids = {id(p) for p in mcgraph.mask_parameters(model)}
    return sum(p.numel() for p in model.parameters() if id(p) not in mask_ids)


def parse_shape(s: str) -> tuple[int, int, int]:
    parts = [int(p) for p in s.lower().split("x")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x32x32, got '{s}'")
    return parts[0], parts[1], parts[2]


# ---------------------------------------------------------------- a. train step

def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              amp: bool) -> Callable[[], torch.Tensor]:
    """One training step as mcgraph's trainer does it (mask parameters in their own group)."""
    masks = mcgraph.mask_parameters(model)
    ids = {id(p) for p in masks}
    weights = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": weights}]
    if masks:
        groups.append({"params": masks, "lr": 0.05, "momentum": 0.0, "nesterov": False,
                       "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step() -> torch.Tensor:
        if masks:
            sync_masks_to_host(model)      # as the trainer does: one device read per step
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if amp:
            scaler.unscale_(opt)
            if masks and _renormalize is not None:
                _renormalize(model)
        scaler.step(opt)
        scaler.update()
        mcgraph.constrain_masks_(model)   # the trainer's default constraint (simplex)
        return loss.detach()

    step.opt = opt  # type: ignore[attr-defined]  # keep the optimizer alive with the closure
    return step


def measure_train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                  amp: bool, channels_last: bool, warmup: int, repeats: int) -> dict[str, Any]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    step = make_step(model, x, y, device, amp)
    ms = wall_ms(step, device, warmup, repeats)
    row: dict[str, Any] = {"step_ms": ms, "images_per_s": x.shape[0] / (ms / 1e3)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        loss = step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_mib=peak / MiB, step_mib=(peak - before) / MiB)
    else:
        loss = step()
    row["loss_finite"] = bool(torch.isfinite(loss).item())
    del step
    return row


def train_part(args, device: torch.device, amp: bool, channels_last: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for name in args.models:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
        branch = name.startswith("resnext")
        k = args.fan_in_branch if branch else args.fan_in
        variants: list[tuple[str, Callable[[], torch.nn.Module]]] = [
            ("plain", lambda: mcgraph.create_model(name, num_classes=10, in_channels=3)),
            (f"masked, learning (K={k}, uniform)",
             lambda: mcgraph.rewrite(name, fan_in=k, init="uniform", in_channels=3,
                                     input_size=(32, 32), num_classes=10, seed=args.seed)),
            (f"masked, frozen (K={k}, random)",
             lambda: mcgraph.freeze_masks(mcgraph.rewrite(
                 name, fan_in=k, init="random", in_channels=3, input_size=(32, 32),
                 num_classes=10, seed=args.seed))),
            (f"frozen, trainer's lowered view (K={k}, random)",     # what fine-tuning runs
             lambda: training_view(mcgraph.freeze_masks(mcgraph.rewrite(
                 name, fan_in=k, init="random", in_channels=3, input_size=(32, 32),
                 num_classes=10, seed=args.seed)))),
        ]
        base: dict[str, Any] | None = None
        for label, build in variants:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"model": name, "variant": label, "batch": args.batch,
                                   "level": "branch" if branch else "module"}
            if out_of_time(args):
                row["error"] = "skipped: --max-seconds reached"
                rows.append(row)
                continue
            model = None
            try:
                model = build()
                if "frozen" in label:   # modules (branches) the frozen masks leave unread
                    dag = dag_of(model)         # the DAG the graph carries (also the view's)
                    row["unread_when_frozen"] = (f"{len(dag.dead_modules())}/{len(dag.blocks())} "
                                                 + ("branches" if branch else "modules"))
                row["params"] = n_params(model)
                row.update(measure_train(model, x, y, device, amp, channels_last,
                                         args.warmup, args.repeats))
            except Exception as e:   # keep going: one failure must not hide the other rows
                row["error"] = first_line(e)
                traceback.print_exc(limit=4)
            model = None
            free(device)
            if label == "plain":
                base = row if "error" not in row else None
            if base is not None and "error" not in row:
                row["time_x_plain"] = row["step_ms"] / base["step_ms"]
                if "peak_mib" in row:
                    row["mem_x_plain"] = row["peak_mib"] / base["peak_mib"]
            row["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"  [train] {name:<15} {label:<32} "
                + (f"{row['step_ms']:.1f} ms/step" if "step_ms" in row else row.get("error", ""))
                + f"  ({row['seconds']} s)")
            rows.append(row)
    return rows


# ---------------------------------------------------------------- b. inference

def infer_part(args, device: torch.device, channels_last: bool) -> tuple[list[dict], list[dict], list[str]]:
    torch_rows: list[dict[str, Any]] = []
    ort_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    c, h, w = args.infer_shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dtypes = [("fp32", torch.float32), ("fp16", torch.float16)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    for name in args.infer_models:
        t0 = time.perf_counter()
        models: dict[str, torch.nn.Module] = {}
        if out_of_time(args):
            notes.append(f"{name}: inference skipped, --max-seconds reached")
            continue
        try:
            models["original"] = mcgraph.create_model(name, num_classes=10, in_channels=c).eval()
            masked = mcgraph.freeze_masks(mcgraph.rewrite(
                name, fan_in=1, init="random", in_channels=c, input_size=(h, w), num_classes=10,
                seed=args.seed))
            slim, rep = mcgraph.compile(masked)
            models["compiled"] = slim.eval()
            notes.append(f"{name}: compiled K=1 random (seed {args.seed}) removed "
                         f"{len(rep.removed)} of {rep.modules_before} "
                         + ("branches" if name.startswith("resnext") else "modules")
                         + f"; params {rep.params_before:,} -> {rep.params_after:,}")
        except Exception as e:
            notes.append(f"{name}: could not build/compile: {first_line(e)}")
            traceback.print_exc(limit=4)
        for label, model in models.items():
            params = n_params(model)
            for dname, dtype in dtypes:
                if out_of_time(args):
                    notes.append(f"{name} {label} {dname}: skipped, --max-seconds reached")
                    continue
                try:
                    m = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=fmt).eval()
                except Exception as e:
                    for b in args.infer_batches:
                        torch_rows.append({"model": name, "variant": label, "dtype": dname,
                                           "batch": b, "params": params, "error": first_line(e)})
                    continue
                for b in args.infer_batches:
                    row: dict[str, Any] = {"model": name, "variant": label, "dtype": dname,
                                           "batch": b, "params": params}
                    try:
                        xb = torch.randn(b, c, h, w, device=device).to(dtype).contiguous(memory_format=fmt)

                        def fwd(m=m, xb=xb):
                            with torch.inference_mode():
                                return m(xb)
                        row["ms"] = event_ms(fwd, device, args.infer_warmup, args.infer_repeats)
                        row["images_per_s"] = b / (row["ms"] / 1e3)
                        with torch.inference_mode():
                            row["output_finite"] = bool(torch.isfinite(fwd()).all().item())
                    except Exception as e:
                        row["error"] = first_line(e)
                    torch_rows.append(row)
                m = xb = fwd = None
                free(device)
            if args.skip_onnx:
                continue
            if out_of_time(args):
                notes.append(f"{name} {label} onnxruntime: skipped, --max-seconds reached")
                continue
            # ONNX: exported from an fp32 CPU copy; the provider is whatever make_session picks
            orow_base = {"model": name, "variant": label, "params": params}
            try:
                path = tmp / f"{name}_{label}.onnx"
                te = time.perf_counter()
                mcgraph.export_onnx(copy.deepcopy(model).cpu().float().eval(), path, (c, h, w))
                export_s = time.perf_counter() - te
                sess = deploy.make_session(path)
                provider = sess.get_providers()[0]
            except Exception as e:
                for b in args.ort_batches:
                    ort_rows.append({**orow_base, "batch": b, "error": first_line(e)})
                traceback.print_exc(limit=4)
                continue
            for b in args.ort_batches:
                row = {**orow_base, "batch": b, "provider": provider, "export_s": round(export_s, 1)}
                try:
                    # probe once: big batches on a CPU provider can be slow; cap the repeats so
                    # one measurement stays within --ort-budget-s (latency_ms also warms up)
                    xb = torch.randn(b, c, h, w)
                    tp = time.perf_counter()
                    deploy.run(sess, xb)
                    probe = time.perf_counter() - tp
                    reps = int(max(3, min(args.ort_repeats, args.ort_budget_s / max(probe, 1e-6) - 5)))
                    row["repeats"] = reps
                    row["ms"] = deploy.latency_ms(sess, (b, c, h, w), repeats=reps)
                    row["images_per_s"] = b / (row["ms"] / 1e3)
                except Exception as e:
                    row["error"] = first_line(e)
                ort_rows.append(row)
            del sess
        log(f"  [infer] {name}: {time.perf_counter() - t0:.1f} s")
        free(device)
    shutil.rmtree(tmp, ignore_errors=True)
    return torch_rows, ort_rows, notes


# ---------------------------------------------------------------- tables

def fmt(v: Any, spec: str = ".3g") -> Any:
    return format(v, spec) if isinstance(v, float) else ("-" if v is None else v)


def print_train(rows: list[dict[str, Any]]) -> None:
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r["variant"], "error: " + r["error"], "", "", "", "", "", ""])
            continue
        table.append([r["model"], r["variant"], round(r["step_ms"], 2), round(r["images_per_s"]),
                      fmt(r.get("time_x_plain")), fmt(r.get("peak_mib"), ".0f"),
                      fmt(r.get("step_mib"), ".0f"), fmt(r.get("mem_x_plain")),
                      r.get("unread_when_frozen", "-")])
    print_table(table, ["model", "variant", "step ms", "img/s", "time x plain", "peak MiB",
                        "step MiB", "peak x plain", "unread"])


def print_infer(torch_rows: list[dict], ort_rows: list[dict]) -> None:
    speedup: dict[tuple, float] = {}
    for r in torch_rows:
        if r["variant"] == "original" and "ms" in r:
            speedup[(r["model"], r["dtype"], r["batch"])] = r["ms"]
    table = []
    for r in torch_rows:
        if "error" in r:
            table.append([r["model"], r["variant"], r["dtype"], r["batch"], f"{r['params']:,}",
                          "error: " + r["error"], "", ""])
            continue
        ref = speedup.get((r["model"], r["dtype"], r["batch"]))
        table.append([r["model"], r["variant"], r["dtype"], r["batch"], f"{r['params']:,}",
                      round(r["ms"], 3), round(r["images_per_s"]),
                      fmt(ref / r["ms"]) if ref else "-"])
    print_table(table, ["model", "variant", "dtype", "batch", "params", "ms", "img/s",
                        "speed-up vs original"])
    if not ort_rows:
        return
    print()
    oref = {(r["model"], r["batch"]): r["ms"] for r in ort_rows
            if r["variant"] == "original" and "ms" in r}
    table = []
    for r in ort_rows:
        if "error" in r:
            table.append([r["model"], r["variant"], r.get("provider", "-"), r["batch"],
                          "error: " + r["error"], "", ""])
            continue
        ref = oref.get((r["model"], r["batch"]))
        table.append([r["model"], r["variant"], r["provider"], r["batch"], round(r["ms"], 3),
                      round(r["images_per_s"]), fmt(ref / r["ms"]) if ref else "-"])
    print_table(table, ["model", "variant", "ORT provider", "batch", "ms", "img/s",
                        "speed-up vs original"])


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                    help="auto: CUDA if available, else the CPU with tiny defaults")
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet110", "resnext29_8x8d"],
                    help="train-step models")
    ap.add_argument("--batch", type=int, default=None, help="train batch (CUDA 128, CPU 8)")
    ap.add_argument("--fan-in", type=int, default=2, help="K of the module-level masks (ResNets)")
    ap.add_argument("--fan-in-branch", type=int, default=2, help="K of the branch masks (ResNeXt)")
    ap.add_argument("--warmup", type=int, default=None, help="train warm-up steps (CUDA 5, CPU 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed train steps (CUDA 20, CPU 2)")
    ap.add_argument("--no-amp", action="store_true", help="train in fp32 (AMP is on with CUDA)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark=True (mcgraph's trainer leaves it off)")
    ap.add_argument("--infer-models", nargs="+", default=["resnet20", "resnext29_8x8d"])
    ap.add_argument("--infer-shape", type=parse_shape, default=(3, 32, 32), help="CxHxW")
    ap.add_argument("--infer-batches", type=int, nargs="+", default=None,
                    help="PyTorch batches (CUDA 1 256, CPU 1 8)")
    ap.add_argument("--infer-warmup", type=int, default=None, help="(CUDA 10, CPU 1)")
    ap.add_argument("--infer-repeats", type=int, default=None, help="(CUDA 50, CPU 3)")
    ap.add_argument("--ort-batches", type=int, nargs="+", default=None,
                    help="onnxruntime batches (default: the PyTorch ones)")
    ap.add_argument("--ort-repeats", type=int, default=None, help="(CUDA 20, CPU 3)")
    ap.add_argument("--ort-budget-s", type=float, default=10.0,
                    help="cap on one onnxruntime measurement (fewer repeats when slow)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="skip the measurements that would start after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write every row as JSON here")
    args = ap.parse_args()

    t_all = time.perf_counter()
    args.deadline = None if args.max_seconds is None else t_all + args.max_seconds
    have_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not have_cuda:
        sys.exit("error: --device cuda asked for, but torch.cuda.is_available() is False")
    device = torch.device("cuda" if (args.device != "cpu" and have_cuda) else "cpu")
    gpu = device.type == "cuda"
    notes: list[str] = []
    if not gpu:
        msg = ("notice: no CUDA device" if not have_cuda else "notice: --device cpu") + \
              ": running on the CPU with tiny default sizes (a smoke test, not a GPU benchmark)"
        log(msg)
        notes.append(msg)

    def dflt(v, cuda_v, cpu_v):
        return v if v is not None else (cuda_v if gpu else cpu_v)
    args.batch = dflt(args.batch, 128, 8)
    args.warmup = dflt(args.warmup, 5, 1)
    args.repeats = dflt(args.repeats, 20, 2)
    args.infer_batches = dflt(args.infer_batches, [1, 256], [1, 8])
    args.infer_warmup = dflt(args.infer_warmup, 10, 1)
    args.infer_repeats = dflt(args.infer_repeats, 50, 3)
    args.ort_batches = args.ort_batches or list(args.infer_batches)
    args.ort_repeats = dflt(args.ort_repeats, 20, 3)
    amp = gpu and not args.no_amp
    channels_last = not args.no_channels_last
    if not gpu and not args.no_amp:
        notes.append("AMP off on the CPU (autocast fp16 + GradScaler is the CUDA path)")
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)

    import onnxruntime as ort
    env = {"device": torch.cuda.get_device_name(device) if gpu else f"cpu ({os.cpu_count()} cores)",
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "onnxruntime": ort.__version__, "ort_available_providers": ort.get_available_providers(),
           "ort_providers_auto": deploy.providers("auto"),
           "amp": amp, "amp_dtype": "float16" if amp else None, "channels_last": channels_last,
           "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
           "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
           "fp16_inference": "model.half() with half inputs (not autocast)",
           "mask_grad_renormalize_after_unscale": _renormalize is not None,
           "settings": {k: v for k, v in vars(args).items() if k not in ("json", "deadline")}}
    log(f"device {env['device']}, torch {env['torch']} (CUDA {env['cuda']}), onnxruntime "
        f"{env['onnxruntime']} providers {env['ort_available_providers']}")
    log(f"train: batch {args.batch}, 3x32x32, K={args.fan_in} (branch K={args.fan_in_branch}), "
        f"AMP {'fp16 + GradScaler' if amp else 'off'}, channels-last {channels_last}, warm-up "
        f"{args.warmup}, median of {args.repeats}")

    train_rows: list[dict] = []
    torch_rows: list[dict] = []
    ort_rows: list[dict] = []

    def dump(final: bool) -> None:   # after each part too: a killed run keeps what it measured
        if not args.json:
            return
        out = {"env": env, "complete": final, "train": train_rows, "inference_torch": torch_rows,
               "inference_onnxruntime": ort_rows, "notes": notes,
               "seconds": round(time.perf_counter() - t_all, 1)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{args.json}.tmp")
        tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
        os.replace(tmp, args.json)

    if not args.skip_train:
        t0 = time.perf_counter()
        train_rows = train_part(args, device, amp, channels_last)
        log(f"train part: {time.perf_counter() - t0:.1f} s")
        dump(False)
    if not args.skip_infer:
        t0 = time.perf_counter()
        torch_rows, ort_rows, inotes = infer_part(args, device, channels_last)
        notes.extend(inotes)
        log(f"inference part: {time.perf_counter() - t0:.1f} s")

    print()
    if train_rows:
        print(f"== a. train step: batch {args.batch}, 3x32x32, 10 classes, "
              f"{'AMP fp16 + GradScaler' if amp else 'fp32'}, "
              f"{'channels-last' if channels_last else 'NCHW'}, SGD (mask group separate), "
              f"median of {args.repeats} after {args.warmup} warm-up, {env['device']}")
        print_train(train_rows)
        print("peak MiB: torch.cuda.max_memory_allocated over one step (weights + optimizer "
              "state + activations); step MiB: peak minus allocated before the step; unread: "
              "modules (ResNet) or branches (ResNeXt) the frozen masks leave unread (still "
              "computed in the forward here)")
        print()
    if torch_rows:
        print(f"== b. inference, {'x'.join(map(str, args.infer_shape))}, eval, "
              f"{'channels-last' if channels_last else 'NCHW'}, PyTorch on {device.type} "
              f"(fp16 = model.half(), half inputs), median of {args.infer_repeats}")
        print_infer(torch_rows, ort_rows)
        print()
    for n in notes:
        print(f"note: {n}")
    total = time.perf_counter() - t_all
    print(f"total {total:.1f} s")
    if args.json:
        dump(True)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
