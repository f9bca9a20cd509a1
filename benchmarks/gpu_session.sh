#!/usr/bin/env bash
# The GPU checks, on a machine with CUDA, onnxruntime-gpu and Fashion-MNIST (Debian's files):
#
#   OUT=gpu-out bash benchmarks/gpu_session.sh tests step          # CUDA tests, step table
#   OUT=gpu-out bash benchmarks/gpu_session.sh infer DIR...        # inference table (see bench_gpu.py)
#   OUT=gpu-out TABLE_S=420 bash benchmarks/gpu_session.sh table1  # Table 1 at a GPU budget
#   OUT=gpu-out GRID_S=420 bash benchmarks/gpu_session.sh grid table2_gpu:learned-k1 pareto_standard
#       # any tables of experiments/results.json, one process per TABLE[:CONFIG,...] sharing the
#       # GPU, stopped after GRID_S seconds; run files to $OUT/grid.tar.gz (under runs/gpu)
#
# Each phase is bounded by `timeout`; a failing phase does not stop the next. Everything goes to
# $OUT/session.log; tables to $OUT/*.json; table1's run files to $OUT/table1_gpu.tar.gz.
# table1 trains experiments/results.json's table1_gpu in three processes sharing the GPU (the
# learned K=1 runs and the controls built on them; learned K=4 and Fixed-Prev; Fixed-Random K=4),
# stops them (SIGTERM: each saves last.pt, so the next call resumes) after TABLE_S seconds.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"; LOG=$OUT/session.log
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
say() { echo "=== $* ($(date -u +%T)Z)" | tee -a "$LOG"; }
run() { local lim=$1; shift; say "\$ $*"; timeout -k 10 "$lim" "$@" 2>&1 | tee -a "$LOG"; say "rc=${PIPESTATUS[0]}"; }

S=experiments/results.json

# train_grid ROOT SECONDS TABLE[:CONFIG,...]...: one `mcgraph experiment` process per group,
# sharing the GPU, under ROOT; stopped after SECONDS (SIGTERM: each saves last.pt to resume)
train_grid() {
  local root=$1 secs=$2 g t only; shift 2; local pids=()
  for g in "$@"; do
    t=${g%%:*}; only=${g#*:}; [ "$only" = "$g" ] && only=""
    $PY -m mcgraph experiment $S --table "$t" ${only:+--only $only} --out "$root" --no-progress \
      >> "$OUT/grid_${t}_${only%%,*}.log" 2>&1 & pids+=($!)
  done
  say "grid: ${pids[*]} for ${secs}s"
  local end=$(( $(date +%s) + secs ))
  alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
  while [ "$(date +%s)" -lt $end ] && alive; do sleep 5; done
  kill -TERM "${pids[@]}" 2>/dev/null; wait
}

phase=${1:-}; shift || true
while [ -n "$phase" ]; do
  case $phase in
    tests)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$LOG"
      $PY -c "import torch, onnxruntime as o; print(torch.__version__, o.__version__, o.get_available_providers())" 2>&1 | tee -a "$LOG"
      run 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py ;;
    step)
      run 240 $PY benchmarks/bench_gpu.py train --json "$OUT/bench_step.json" ;;
    infer)
      dirs=(); while [ $# -gt 0 ] && [ -d "$1" ]; do dirs+=("$1"); shift; done
      run 180 $PY benchmarks/bench_gpu.py infer "${dirs[@]}" --json "$OUT/bench_infer.json"
      for d in "${dirs[@]}"; do
        run 60 $PY -m mcgraph bench "$d/slim.onnx" --baseline "$d/orig.onnx" --device cuda --batch-sizes 1,256
      done ;;
    table1)
      R=runs/experiment
      train_grid $R "${TABLE_S:-420}" table1_gpu:random-chain-k1,chain-of-learned-k1 \
        table1_gpu:learned-k4,fixed-prev table1_gpu:fixed-random-k4
      $PY -m mcgraph experiment $S --table table1_gpu --out $R --dry-run 2>&1 | tee -a "$LOG"
      tar czf "$OUT/table1_gpu.tar.gz" --exclude='*.pt' --exclude='*.onnx' -C $R table1_gpu
      ck=$R/table1_gpu/learned-k1/resnet20-s0/best.pt
      if [ -f "$ck" ]; then               # eval on the GPU: PyTorch, then its ONNX file
        run 60 $PY -m mcgraph eval "$ck" --device cuda
        run 60 $PY -m mcgraph compile "$ck" -o "$OUT/learned-k1.onnx"
        run 60 $PY -m mcgraph eval "$OUT/learned-k1.onnx" --device cuda
      fi ;;
    grid)
      groups=()
      while [ $# -gt 0 ] && [[ $1 != tests && $1 != step && $1 != infer && $1 != table1 ]]; do
        groups+=("$1"); shift
      done
      train_grid runs/gpu "${GRID_S:-420}" "${groups[@]}"
      tar czf "$OUT/grid.tar.gz" --exclude='*.pt' --exclude='*.onnx' runs/gpu "$OUT"/grid_*.log ;;
    *) say "unknown phase $phase" ;;
  esac
  phase=${1:-}; shift || true
done
