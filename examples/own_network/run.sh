#!/usr/bin/env bash
# Your own residual network through the command line: find its blocks, rewrite, learn K=1
# connectivity, look at the wiring, compile to ONNX, evaluate the file in onnxruntime.
#
#   bash examples/own_network/run.sh                                  # synthetic data, seconds
#   DATA=fashion-mnist SIZE=28x28 EPOCHS=10 bash examples/own_network/run.sh
#   OUT=/tmp/own EPOCHS=1 bash examples/own_network/run.sh            # what the test runs
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NET="$HERE/net.py:make"            # file.py:factory; --model-arg key=value feeds the factory
OUT="${OUT:-own-network-out}"
DATA="${DATA:-synthetic}"          # synthetic is 1x16x16, 10 classes, no files needed
SIZE="${SIZE:-16x16}"              # must be the data's HxW: train refuses a mismatch
EPOCHS="${EPOCHS:-3}"
K="${K:-1}"
mkdir -p "$OUT"

# --explain: each module's verdict (block or not, and why) before anything is written; with -k
# and -o the same call also rewrites. Channels and classes are make()'s defaults (1 and 10); for
# RGB data add --in-channels 3 (or --model-arg in_channels=3), for other classes --num-classes.
mcgraph rewrite "$NET" --input-size "$SIZE" -k "$K" --explain -o "$OUT/masked.pt"

# The checkpoint names a Python file; rebuilding it runs that file, hence --trust-code (train,
# inspect and compile all rebuild it). --overwrite: rerunning starts the run over.
mcgraph train "$OUT/masked.pt" --trust-code --data "$DATA" --epochs "$EPOCHS" --batch-size 64 \
    --freeze-at 0.3 --out "$OUT/run" --overwrite --no-progress

# best.pt is the epoch best on held-out training images; its masks froze at 30% of the steps.
mcgraph inspect "$OUT/run/best.pt" --trust-code

# Freeze, drop the blocks no one reads, export; the file is checked against PyTorch in
# onnxruntime, and records the data's mean/std for deployment (examples/deploy.py).
mcgraph compile "$OUT/run/best.pt" --trust-code -o "$OUT/model.onnx"

# The ONNX file alone, on the test split: no code of yours runs here.
mcgraph eval "$OUT/model.onnx" --data "$DATA"
