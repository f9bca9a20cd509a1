"""Train-step time and activation memory of branch-masked ResNeXt against fixed full connectivity.

    python benchmarks/bench_resnext.py [--model resnext29_8x8d] [--batch 64] [--fan-in 1 4]

Side by side in one run, same batch: the original network (one stream), the rewritten network
with fixed full connectivity (K=C frozen: it computes the original, on C streams), and the
rewritten network learning its branch masks at each fan-in. Memory is the bytes autograd saves
for backward (distinct storages): the activation memory a training step holds at its peak.
Goal (issue [3/6]): learning masks costs at most 1.5x the time and 2x the memory of fixed-full.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_mask_overhead import measure  # noqa: E402
from common import print_table  # noqa: E402

import mcgraph  # noqa: E402
from mcgraph.train.loop import apply_connectivity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnext29_8x8d")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fan-in", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, args.classes, (args.batch,))
    original = mcgraph.create_model(args.model, num_classes=args.classes)
    c = original.layer1[0].conv2.groups
    full = mcgraph.rewrite(args.model, fan_in=c, init="full", num_classes=args.classes)
    apply_connectivity(full, "fixed-full", 0)
    variants = [("original (1 stream)", original), (f"fixed-full K={c}", full)]
    for k in args.fan_in:
        variants.append((f"learned K={k}", mcgraph.rewrite(args.model, fan_in=k, init="uniform",
                                                         num_classes=args.classes)))
    results = [(label, *measure(m, x, y, args.repeats)) for label, m in variants]
    _, t_full, m_full = results[1]
    _, t_orig, m_orig = results[0]
    rows = [[label, t * 1e3, t / t_full, t / t_orig, mem, mem / m_full, mem / m_orig]
            for label, t, mem in results]
    print(f"{args.model}, batch {args.batch}, 32x32, {args.classes} classes, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    print_table(rows, ["variant", "step ms", "x fixed-full", "x original", "act. MiB",
                       "mem x fixed-full", "mem x original"])


if __name__ == "__main__":
    main()
