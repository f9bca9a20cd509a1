"""The training table: masked train steps against the plain network's, interleaved in one run.

    python benchmarks/bench_train.py                       # what `make bench` prints
    python benchmarks/bench_train.py --only module --repeats 20
    python benchmarks/bench_train.py --only branch --branch-batches 32
    python benchmarks/bench_train.py --only module --compile   # + the frozen view, torch.compile

Protocol: 32x32 inputs, K=2 (module level), learning masks, SGD with momentum; each
variant's step time is the median of ``--repeats`` steps taken in turn with the plain network's
(one step of each, then again), so machine load hits every variant alike. Memory is the bytes
autograd saves for backward (distinct storages), the activation memory a step holds.

Module level (resnet20 at batch 128, resnet110 at batch 64): plain, masked learning (mask
gradients from the whole batch, the trainer's default, and from 32 items), masked frozen (the
lowered view the trainer trains once masks freeze, wired to the K latest blocks so that no
block is pruned). Branch level (resnext29_8x8d): the original
ResNeXt, fixed-full (K=C frozen) as the trainer steps it (one stream) and on C streams, and
learned K=1 and K=4.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, saved_activation_bytes  # noqa: E402

import mcgraph  # noqa: E402
from mcgraph.mask_ops import set_grad_samples  # noqa: E402
from mcgraph.masks import mask_modules
from mcgraph.train.build import apply_connectivity, training_view  # noqa: E402
from mcgraph.train.config import TrainConfig  # noqa: E402
from mcgraph.train.step import Stepper  # noqa: E402


@dataclass
class Variant:
    label: str
    model: torch.nn.Module
    step: Callable[[], None]
    times: list[float]


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The trainer's own step (mcgraph.train.step.Stepper: SGD with the masks' group, the
    mask constraint), on ``model`` as it is (learning, frozen or plain)."""
    model.train()
    stepper = Stepper(model, TrainConfig(model="bench", device="cpu"), torch.device("cpu"),
                      channels_last=x.is_contiguous(memory_format=torch.channels_last)
                      and not x.is_contiguous())
    stepper.set_net(model)
    return lambda: stepper.step(x, y) and None


def saved_mib(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    mem: list[int] = []
    with saved_activation_bytes(mem):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return mem[0] / 2**20


def interleaved(variants: list[Variant], repeats: int, warmup: int = 2) -> None:
    for _ in range(warmup):
        for v in variants:
            v.step()
    for _ in range(repeats):
        for v in variants:
            t = time.perf_counter()
            v.step()
            v.times.append(time.perf_counter() - t)


def table(section: str, variants: list[Variant], x: torch.Tensor, y: torch.Tensor,
          repeats: int, ref: int = 0) -> list[list]:
    interleaved(variants, repeats)
    med = [statistics.median(v.times) for v in variants]
    mem = [saved_mib(v.model, x, y) for v in variants]
    return [[section, v.label, t * 1e3, t / med[ref], m, m / mem[ref]]
            for v, t, m in zip(variants, med, mem)]


def module_rows(name: str, batch: int, fan_in: int, repeats: int, fmt,
                compile_frozen: bool = False) -> list[list]:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    def masked(samples):
        return set_grad_samples(mcgraph.rewrite(name, fan_in=fan_in, init="uniform"), samples).to(
            memory_format=fmt)
    frozen = mcgraph.rewrite(name, fan_in=fan_in, init="uniform")
    for m in mask_modules(frozen):        # the K latest candidates: every block stays read
        m.freeze(list(range(m.num_candidates - m.fan_in, m.num_candidates)))
    models = [("plain", mcgraph.create_model(name).to(memory_format=fmt)),
              ("masked learning (the trainer's default)", masked(None)),
              ("masked learning, --mask-grad-samples 32", masked(32)),
              ("masked frozen (trained view, all blocks)",
               training_view(frozen).to(memory_format=fmt))]
    variants = [Variant(label, m, make_step(m, x, y), []) for label, m in models]
    if compile_frozen:          # inductor on the frozen view: the wiring no longer changes
        view = models[-1][1]
        compiled = torch.compile(view)
        step = make_step(compiled, x, y)
        t = time.perf_counter()
        step()
        label = f"masked frozen, torch.compile (compiled in {time.perf_counter() - t:.0f} s)"
        variants.append(Variant(label, view, step, []))
    return table(f"{name} b{batch} K={fan_in}", variants, x, y, repeats)


def branch_rows(name: str, batch: int, fan_ins: list[int], repeats: int) -> list[list]:
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    original = mcgraph.create_model(name)
    c = original.layer1[0].conv2.groups
    full = apply_connectivity(mcgraph.rewrite(name, fan_in=c, init="full"), "fixed-full", 0)
    # the trainer steps Fixed-Full on one stream (its training view: the original ResNeXt);
    # the C-stream row is what branch-level learning costs at K=C
    models = [("original", original), (f"fixed-full K={c}, as trained", training_view(full)),
              (f"fixed-full K={c}, C streams", full)]
    models += [(f"learned K={k}", mcgraph.rewrite(name, fan_in=k, init="uniform")) for k in fan_ins]
    variants = [Variant(label, m, make_step(m, x, y), []) for label, m in models]
    return table(f"{name} b{batch}", variants, x, y, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["module", "branch"])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--fan-in", type=int, default=2)
    ap.add_argument("--branch-model", default="resnext29_8x8d")
    ap.add_argument("--branch-batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--branch-fan-in", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--contiguous", action="store_true", help="NCHW instead of channels-last")
    ap.add_argument("--compile", action="store_true",
                    help="add the frozen view under torch.compile (inductor; compile time "
                         "reported)")
    args = ap.parse_args()
    fmt = torch.contiguous_format if args.contiguous else torch.channels_last
    rows: list[list] = []
    if args.only != "branch":
        for name, batch in (("resnet20", 128), ("resnet110", 64)):
            rows += module_rows(name, batch, args.fan_in, args.repeats, fmt, args.compile)
    if args.only != "module":
        for batch in args.branch_batches:
            rows += branch_rows(args.branch_model, batch, args.branch_fan_in, args.repeats)
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}, median of {args.repeats} "
          f"interleaved steps, 32x32, {'NCHW' if args.contiguous else 'channels-last'} "
          "(module level)")
    print_table(rows, ["setting", "variant", "step ms", "time x", "saved MiB", "memory x"])


if __name__ == "__main__":
    main()
