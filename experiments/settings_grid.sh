#!/bin/bash
# mask-settings search: resnet20 K=1, Fashion-MNIST, 2 epochs on 20k train images, val 5000
cd /work/main
R=runs/exp/settings
run() { name=$1; shift; d=$R/$name/resnet20-s0; [ -f $d/metrics.jsonl ] && [ $(wc -l < $d/metrics.jsonl) -ge 2 ] && return
  .venv/bin/mcgraph train resnet20 --data fashion-mnist --epochs 2 --max-train-samples 20000 --fan-in 1 --seed 0 --out $d --no-progress "$@" > $R/$name.log 2>&1; }
mkdir -p $R
run fixed-prev --connectivity fixed-prev
run box-lr.05-f.3 --mask-constraint box --mask-lr 0.05 --freeze-at 0.3
run simplex-lr.05-f.3 --mask-constraint simplex --mask-lr 0.05 --freeze-at 0.3
run simplex-lr.01-f.3 --mask-constraint simplex --mask-lr 0.01 --freeze-at 0.3
run simplex-lr.2-f.3 --mask-constraint simplex --mask-lr 0.2 --freeze-at 0.3
run simplex-lr.05-f.5 --mask-constraint simplex --mask-lr 0.05 --freeze-at 0.5
run simplex-lr.05-f.3-prev --mask-constraint simplex --mask-lr 0.05 --freeze-at 0.3 --init prev
run box-lr.01-f.3 --mask-constraint box --mask-lr 0.01 --freeze-at 0.3
run box-lr.05-f.5 --mask-constraint box --mask-lr 0.05 --freeze-at 0.5
echo ALLDONE > $R/DONE
