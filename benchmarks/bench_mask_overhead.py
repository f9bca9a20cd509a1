"""Train-step time and activation memory of masked ResNets against the plain network.

    python benchmarks/bench_mask_overhead.py [--models resnet20 resnet110] [--batch 64] [--fan-in 2]

For each model, in one run and side by side: the plain network, the masked network learning its
masks (sampling, straight-through gradient for every candidate) and the masked network with
frozen masks. Memory is the bytes autograd saves for backward (distinct storages), which is the
activation memory a step holds at its peak; it must grow linearly with depth, not quadratically.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table, saved_activation_bytes, time_steps  # noqa: E402

import mcgraph  # noqa: E402


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mcgraph.constrain_masks_(model)   # the trainer's default constraint (simplex)

    seconds = time_steps(step, repeats=repeats)
    mem: list[int] = []
    with saved_activation_bytes(mem):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return seconds, mem[0] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fan-in", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        x = torch.randn(args.batch, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch,))
        plain = mcgraph.create_model(name)
        learning = mcgraph.rewrite(name, fan_in=args.fan_in, init="uniform")
        frozen = mcgraph.freeze_masks(mcgraph.rewrite(name, fan_in=args.fan_in, init="uniform"))
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        if args.channels_last:
            x = x.contiguous(memory_format=fmt)
        base_t, base_m = measure(plain.to(memory_format=fmt), x, y, args.repeats)
        for label, model in (("plain", None), ("masked, learning", learning), ("masked, frozen", frozen)):
            t, m = (base_t, base_m) if model is None else measure(model.to(memory_format=fmt), x, y, args.repeats)
            rows.append([name, label, t * 1e3, t / base_t, m, m / base_m])
    print(f"batch {args.batch}, K={args.fan_in}, threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print_table(rows, ["model", "variant", "step ms", "time x", "act. MiB", "memory x"])


if __name__ == "__main__":
    main()
