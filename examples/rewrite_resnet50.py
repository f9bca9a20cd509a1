"""Rewrite torchvision's ResNet-50 from Python, read its wiring, compile it, check the ONNX file.

    python examples/rewrite_resnet50.py                  # 224x224 inputs, under a minute on 2 cores
    python examples/rewrite_resnet50.py --tiny           # 64x64 (what tests/test_examples.py runs)

No training here: a random K=1 wiring stands in for a learned one, so what compile removes and
what it keeps are visible in seconds. Train first (examples/learn_own_data.py) for a useful model.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

import mcgraph
from mcgraph.deploy import make_session, run

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--size", type=int, default=224, help="input height and width")
p.add_argument("--fan-in", type=int, default=1, help="K: inputs each block reads")
p.add_argument("--seed", type=int, default=0, help="which random wiring")
p.add_argument("--tiny", action="store_true", help="64x64 inputs (a quick check)")
p.add_argument("--out", default="rewrite-out", help="folder for resnet50.onnx")
args = p.parse_args()
size = 64 if args.tiny else args.size
torch.manual_seed(args.seed)

# "torchvision:NAME" builds torchvision.models.get_model(NAME, weights=None); num_classes swaps
# the head. init="random" gives every mask a decided top-K: compile refuses an untrained
# "uniform" rewrite, whose candidates all tie (the candidates' order would pick the wiring).
masked = mcgraph.rewrite("torchvision:resnet50", fan_in=args.fan_in, init="random",
                         num_classes=10, input_size=(size, size), seed=args.seed)

# The DAG travels with the graph; dag_of adds the current mask values, so it is never stale.
dag = mcgraph.dag_of(masked)
print(f"{len(dag.blocks())} blocks; each reads {args.fan_in} of its candidates (earlier outputs)")
for b in dag.blocks():
    reads = ", ".join(dag.chosen_inputs(b))
    print(f"  {b:9} reads {reads:20} ({len(dag.candidates(b))} candidates)")
print("read by no one (compile removes them):", ", ".join(dag.dead_modules()) or "none")

# compile works on a copy: freeze the masks to their top-K, lower them to plain adds, delete the
# unread blocks, fold BatchNorms; every pass is checked on a probe batch by the pass driver.
slim, report = mcgraph.compile(masked)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
onnx_path = mcgraph.export_onnx(slim, out / "resnet50.onnx", tuple(report.input_shape),
                                params=report.params_after)

# The file must compute what the masked network computes in eval mode (top-K wiring): compare
# onnxruntime with the model as rewritten, not only with the compiled one.
x = torch.randn(4, 3, size, size)
with torch.no_grad():
    ref = masked.eval()(x).numpy()
got = run(make_session(onnx_path), x)       # CUDA provider with IOBinding when there is one
print(f"max |onnxruntime - pytorch| = {np.abs(got - ref).max():.2e} "
      f"(output scale {np.abs(ref).max():.2f})")
print(f"blocks: {report.modules_before} -> {report.modules_after}")
print(f"parameters: {report.params_before:,} -> {report.params_after:,} "
      f"({report.params_after / report.params_before:.0%}); wrote {onnx_path}")
