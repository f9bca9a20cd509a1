#!/usr/bin/env bash
# Train weights and connectivity in several processes with torchrun (DistributedDataParallel).
#
#   bash examples/torchrun_ddp.sh                                   # 2 CPU processes, synthetic
#   DATA=fashion-mnist MODEL=resnet20 EPOCHS=10 bash examples/torchrun_ddp.sh
#   DEVICE=cuda NPROC=8 DATA=cifar10 bash examples/torchrun_ddp.sh     # one process per GPU
#   EPOCHS=1 OUT=/tmp/ddp bash examples/torchrun_ddp.sh --max-steps 4  # extra args go to train
set -euo pipefail

NPROC="${NPROC:-2}"
DEVICE="${DEVICE:-cpu}"       # cpu: the gloo backend; cuda: NCCL, one GPU per process
DATA="${DATA:-synthetic}"
MODEL="${MODEL:-resnet20}"
EPOCHS="${EPOCHS:-2}"
BATCH="${BATCH:-32}"          # per process: the global batch is NPROC x BATCH
OUT="${OUT:-ddp-out}"
# Each process would otherwise start one thread per core and the processes would fight over them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# Every rank draws the same wiring at each step (the masks' random streams are seeded by step),
# so DDP averages gradients of one network. Each rank prints its result (they agree); rank 0 alone
# writes config.json, metrics.jsonl and the checkpoints. --standalone: a one-machine rendezvous.
torchrun --standalone --nproc_per_node="$NPROC" -m mcgraph train "$MODEL" -k 1 \
    --data "$DATA" --device "$DEVICE" --epochs "$EPOCHS" --batch-size "$BATCH" \
    --out "$OUT" --overwrite --no-progress "$@"

# The checkpoints are ordinary ones (one process compiles them):
#   mcgraph inspect "$OUT/best.pt"; mcgraph compile "$OUT/best.pt" -o model.onnx
