#!/usr/bin/env bash
# One GPU session, end to end, within about 8 minutes on an H100:
#   environment (nvidia-smi, versions, onnxruntime providers)
#   -> pytest -m "not slow" (tests/test_cuda.py runs its CUDA tests there)
#   -> resnet20 on Fashion-MNIST on CUDA (learned K=2, AMP), compile to ONNX, eval both
#   -> resnext29_8x8d the same (branch level, K=1), 1 epoch
#   -> benchmarks/bench_gpu.py --json $OUT/bench_gpu.json
#
#   export PYTHONPATH=$PWD OUT=/path/to/out; bash benchmarks/gpu_session.sh   # from the repo root
#
# Writes into $OUT (default ./gpu-out) only: session.log (everything), pytest.log,
# bench_gpu.json and results.json (every step's exit code, seconds and JSON output, the runs'
# config and per-epoch metrics). Checkpoints and ONNX files go to $WORK (a temp dir).
# Every step is timed and its exit code logged; a failing step does not stop the session.
# A deadline (SESSION_BUDGET_S, default 500 s) bounds the whole: each step's `timeout` is cut
# so that the benchmark keeps at least BENCH_MIN_S seconds.
#
# Knobs (environment): PY, DATA_DIR (.fmnist), DEVICE (cuda), SESSION_BUDGET_S, BENCH_MIN_S,
# PYTEST_TIMEOUT (240), PYTEST_FLAGS (-q -x -p no:cacheprovider), PYTEST_TARGETS, R20_EPOCHS (2), R20_K (2), RX_MODEL (resnext29_8x8d),
# RX_EPOCHS (1), RX_K (1), RX_MAX_TRAIN_SAMPLES (all), TRAIN_EXTRA, EVAL_EXTRA, BENCH_ARGS,
# SMOKE=1 (CPU, tiny sizes, only tests/test_cuda.py: checks the script itself without a GPU).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DATA_DIR=${DATA_DIR:-.fmnist}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mcgraph-gpu.XXXXXX")}
mkdir -p "$WORK"

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then   # the script's plumbing on a CPU machine, in about a minute
    DEVICE=${DEVICE:-cpu}
    SESSION_BUDGET_S=${SESSION_BUDGET_S:-400}
    BENCH_MIN_S=${BENCH_MIN_S:-60}
    PYTEST_TARGETS=${PYTEST_TARGETS:-tests/test_cuda.py}
    R20_EPOCHS=${R20_EPOCHS:-1}
    RX_MODEL=${RX_MODEL:-resnext29_2x8d}
    RX_MAX_TRAIN_SAMPLES=${RX_MAX_TRAIN_SAMPLES:-128}
    TRAIN_EXTRA=${TRAIN_EXTRA:---max-train-samples 256 --batch-size 64}
    EVAL_EXTRA=${EVAL_EXTRA:---max-samples 500}
    BENCH_ARGS=${BENCH_ARGS:---batch 4 --repeats 1 --warmup 1 --models resnet20 --infer-models resnet20 --infer-repeats 2}
fi
DEVICE=${DEVICE:-cuda}
SESSION_BUDGET_S=${SESSION_BUDGET_S:-500}
BENCH_MIN_S=${BENCH_MIN_S:-120}
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-240}
PYTEST_TARGETS=${PYTEST_TARGETS:-}
PYTEST_FLAGS=${PYTEST_FLAGS:--q -x -p no:cacheprovider}
R20_EPOCHS=${R20_EPOCHS:-2}
R20_K=${R20_K:-2}
RX_MODEL=${RX_MODEL:-resnext29_8x8d}
RX_EPOCHS=${RX_EPOCHS:-1}
RX_K=${RX_K:-1}
RX_MAX_TRAIN_SAMPLES=${RX_MAX_TRAIN_SAMPLES:-}
TRAIN_EXTRA=${TRAIN_EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
BENCH_ARGS=${BENCH_ARGS:-}

START=$(date +%s)
DEADLINE=$((START + SESSION_BUDGET_S))
STEPS_TSV=$WORK/steps.tsv
: > "$STEPS_TSV"

now() { date +%s; }

# limit CAP RESERVE: min(CAP, seconds to the deadline minus RESERVE)
limit() {
    local cap=$1 reserve=$2 left
    left=$((DEADLINE - $(now) - reserve))
    if [ "$left" -lt "$cap" ]; then echo "$left"; else echo "$cap"; fi
}

# step NAME CAP RESERVE CMD...: run CMD under `timeout`, stdout to $WORK/NAME.out (or
# $STEP_OUT) and the log, stderr to the log; record rc and seconds. Never fails the script.
step() {
    local name=$1 cap=$2 reserve=$3
    shift 3
    local file=${STEP_OUT:-$WORK/$name.out} lim t0 rc dt
    lim=$(limit "$cap" "$reserve")
    t0=$(now)
    echo
    echo "=== [$name] start $(date -u +%H:%M:%S)Z (t+$((t0 - START))s), timeout ${lim}s"
    local cmd="$*"
    cmd=${cmd//$'\n'/ }
    [ "${#cmd}" -gt 400 ] && cmd="${cmd:0:400} ..."
    echo "    \$ $cmd"
    if [ "$lim" -lt 10 ]; then
        rc=125
        echo "skipped: the session's time budget is spent" > "$file"
        cat "$file"
    else
        timeout --kill-after=15 "$lim" "$@" | tee "$file"
        rc=${PIPESTATUS[0]}
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "!!! [$name] timed out after ${lim}s"
    fi
    dt=$(($(now) - t0))
    echo "=== [$name] rc=$rc ${dt}s"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$lim" "$file" >> "$STEPS_TSV"
    return 0
}

# the checkpoint a run left: best.pt, else last.pt (a run stopped early)
ckpt() { if [ -f "$1/best.pt" ]; then echo "$1/best.pt"; else echo "$1/last.pt"; fi; }

show_run() {   # what the trainer recorded: device, AMP, channels-last, per-epoch metrics
    local dir=$1
    echo "--- $dir"
    "$PY" - "$dir" <<'EOF' || true
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
try:
    c = json.loads((d / "config.json").read_text())
    print("config: " + ", ".join(f"{k}={c.get(k)}" for k in
          ("model", "device", "amp", "channels_last", "fan_in", "epochs", "batch_size",
           "steps_per_epoch", "freeze_step", "max_train_samples")))
except Exception as e:
    print(f"config.json: {type(e).__name__}: {e}")
try:
    for line in (d / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        print("epoch {epoch}: train_loss {train_loss:.3f} train_acc {train_acc:.1f} test_acc "
              "{test_acc:.2f} {images_per_s:.0f} img/s {seconds:.1f}s masks_frozen "
              "{masks_frozen} entropy {mask_entropy:.2f}".format(**r))
except Exception as e:
    print(f"metrics.jsonl: {type(e).__name__}: {e}")
EOF
}

train_compile_eval() {   # PREFIX MODEL K EPOCHS [extra train args...]
    local p=$1 model=$2 k=$3 epochs=$4
    shift 4
    local run=$WORK/$p
    # shellcheck disable=SC2086  # TRAIN_EXTRA / EVAL_EXTRA are word lists on purpose
    step "$p-train" 240 "$BENCH_MIN_S" "$PY" -m mcgraph train "$model" --data fashion-mnist \
        --data-dir "$DATA_DIR" --device "$DEVICE" --fan-in "$k" --epochs "$epochs" \
        --out "$run" --json $TRAIN_EXTRA "$@"
    show_run "$run"
    local c
    c=$(ckpt "$run")
    step "$p-compile" 120 "$BENCH_MIN_S" "$PY" -m mcgraph compile "$c" -o "$WORK/$p.onnx" --json
    # shellcheck disable=SC2086
    step "$p-eval-pt" 90 "$BENCH_MIN_S" "$PY" -m mcgraph eval "$c" --data fashion-mnist \
        --data-dir "$DATA_DIR" --device "$DEVICE" --json $EVAL_EXTRA
    # shellcheck disable=SC2086
    step "$p-eval-onnx" 90 "$BENCH_MIN_S" "$PY" -m mcgraph eval "$WORK/$p.onnx" \
        --data fashion-mnist --data-dir "$DATA_DIR" --device auto --json $EVAL_EXTRA
}

main() {
    echo "mcgraph GPU session $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null)"
    echo "root $ROOT  OUT $OUT  WORK $WORK  PY $PY  DEVICE $DEVICE  budget ${SESSION_BUDGET_S}s"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)" \
         "($(git -C "$ROOT" status --short 2>/dev/null | wc -l | tr -d ' ') changed files)"
    [ "$SMOKE" = 1 ] && echo "SMOKE=1: CPU, tiny sizes; not a GPU measurement"

    step env-nvidia-smi 30 0 nvidia-smi
    step env-python 60 0 "$PY" -c '
import json, os, platform, sys
info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
for mod in ("torchvision", "onnx", "onnxscript", "onnxruntime", "networkx", "click", "numpy", "pytest"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:
        info[mod] = f"missing ({type(e).__name__})"
import onnxruntime as ort
info["onnxruntime_available_providers"] = ort.get_available_providers()
import mcgraph
from mcgraph import deploy
info["mcgraph_from"] = os.path.dirname(mcgraph.__file__)
try:
    info["mcgraph_ort_providers_cuda"] = deploy.providers("cuda")
except Exception as e:
    info["mcgraph_ort_providers_cuda"] = f"{type(e).__name__}: {e}"
print(json.dumps(info, indent=2))
'
    echo "--- data dir $DATA_DIR:"
    ls -l "$DATA_DIR" 2>&1 | head -8

    # shellcheck disable=SC2086
    STEP_OUT=$OUT/pytest.log step pytest "$PYTEST_TIMEOUT" $((BENCH_MIN_S + 130)) \
        "$PY" -m pytest -m "not slow" $PYTEST_FLAGS $PYTEST_TARGETS

    train_compile_eval r20 resnet20 "$R20_K" "$R20_EPOCHS"
    if [ -n "$RX_MAX_TRAIN_SAMPLES" ]; then
        train_compile_eval rx "$RX_MODEL" "$RX_K" "$RX_EPOCHS" --max-train-samples "$RX_MAX_TRAIN_SAMPLES"
    else
        train_compile_eval rx "$RX_MODEL" "$RX_K" "$RX_EPOCHS"
    fi

    local lim
    lim=$(limit 240 0)
    # shellcheck disable=SC2086
    step bench "$lim" 0 "$PY" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" \
        --max-seconds $((lim > 40 ? lim - 25 : 15)) $BENCH_ARGS

    echo
    echo "=== summary (t+$(($(now) - START))s)"
    "$PY" - "$STEPS_TSV" "$WORK" "$OUT/results.json" <<'EOF' || echo "summary failed"
import json, sys
from pathlib import Path
tsv, work, dest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def parse(text):
    text = text.strip()
    for start in [0] + [i for i, ch in enumerate(text) if ch in "{["][:5]:
        try:
            return json.loads(text[start:])
        except ValueError:
            pass
    return None

steps = []
for line in tsv.read_text().splitlines():
    name, rc, secs, lim, file = line.split("\t")
    try:
        text = Path(file).read_text(errors="replace")
    except OSError:
        text = ""
    st = {"step": name, "rc": int(rc), "seconds": int(secs), "timeout": int(lim)}
    data = parse(text) if name.split("-")[-1] in ("train", "compile", "pt", "onnx", "python") else None
    if data is not None:
        st["json"] = data
    else:
        st["tail"] = text[-1500:]
    steps.append(st)
runs = {}
for p in ("r20", "rx"):
    d = work / p
    r = {}
    try:
        r["config"] = json.loads((d / "config.json").read_text())
    except Exception:
        pass
    try:
        r["metrics"] = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    except Exception:
        pass
    runs[p] = r
dest.write_text(json.dumps({"steps": steps, "runs": runs}, indent=2, default=str) + "\n")
w = max(len(s["step"]) for s in steps)
for s in steps:
    extra = ""
    j = s.get("json")
    if isinstance(j, dict):
        keys = ("best_test_acc", "acc", "provider", "device", "params_before", "params_after",
                "removed", "onnx_max_abs_diff", "seconds")
        extra = ", ".join(f"{k}={len(j[k]) if k == 'removed' else j[k]}" for k in keys if k in j)
    status = "ok" if s["rc"] == 0 else ("SKIPPED" if s["rc"] == 125 else
                                        "TIMEOUT" if s["rc"] in (124, 137) else "FAILED")
    print(f"{s['step']:<{w}}  rc={s['rc']:<3} {s['seconds']:>4}s  {status:<7} {extra}")
print(f"wrote {dest}")
EOF
    echo "session done in $(($(now) - START))s; outputs: $(ls "$OUT" | tr '\n' ' ')"
    awk -F'\t' '$2 != 0 { n++ } END { if (n) print n " step(s) did not succeed"; exit n > 0 }' "$STEPS_TSV"
}

main 2>&1 | tee -a "$OUT/session.log"
exit "${PIPESTATUS[0]}"
