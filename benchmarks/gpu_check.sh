#!/usr/bin/env bash
# GPU check (issues 12 and 22), under 5 minutes on one GPU, alone on the machine, writing one JSON file:
#   - loader ratio: the full training data path (train loader + views on the GPU) over the raw uint8 read
#   - teacher-epoch ratio: `dlkdd teacher`'s train clips/s over the model-only step rate (same model,
#     batch, clip shape)
#   - model-only bf16 step rate of r2plus1d_18 at 16x112x112, batch 16 (clips/s)
#   - Zero-DCE enhance frames/s at 320x240 (bf16 and fp32)
#   - and, through the CLI on a generated ARID-shaped set, the enhancer fit, enhance, teacher and
#     soft-labels stages with their peak GPU memory.
# benchmarks/gpu_check.py holds the stages and says exactly what each measures.
#
#   BUNDLE=.gpu-bundle GPU_CHECK_JSON=$OUT/gpu_check.json bash benchmarks/gpu_check.sh      # on the GPU machine
#   GPU_CHECK_DEVICE=cpu BUNDLE=DIR bash benchmarks/gpu_check.sh                             # dry run on a CPU, tiny
#
# A machine with no network: `bash benchmarks/gpu_bundle.sh PYVER` builds here the wheels the check
# needs beyond torch (decord, av, h5py, numpy, click, rich and its three, dlkdd itself); with
# BUNDLE=DIR this script first installs, with `pip install --no-index --find-links`, those whose modules
# the interpreter cannot import (and dlkdd, unless the wheel's files differ from this tree's: then the
# tree is used) into a folder of its own put first on PYTHONPATH, so the machine's CUDA torch and
# packages are kept. Without BUNDLE nothing is installed: the packages must be importable already.
#
# Every stage runs under its own `timeout` (a hung stage is killed and the next one runs), inside an
# overall budget (GPU_CHECK_BUDGET, default 285 s; the script exits within it plus a few seconds),
# and the JSON is rewritten after each stage, so a stopped check leaves what it measured. The data set
# is rendered in the background (other cores) while the model-level stages run.
#
# Environment: PYTHON (interpreter, default python3), BUNDLE, GPU_CHECK_JSON (default ./gpu_check.json),
# GPU_CHECK_BUDGET, GPU_CHECK_DEVICE (cuda | cpu), GPU_CHECK_DLKDD (wheel | tree: where dlkdd comes
# from when the bundle has a wheel; default wheel if it matches the tree), GPU_CHECK_KEEP=1 (keep the
# work folder), and the size knobs of benchmarks/gpu_check.py (GPU_CHECK_MODEL, _BATCH, _STEPS, ...;
# on a CPU they default to tiny sizes).
set -uo pipefail
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_JSON=${GPU_CHECK_JSON:-$PWD/gpu_check.json}
case $GPU_CHECK_JSON in /*) ;; *) GPU_CHECK_JSON=$PWD/$GPU_CHECK_JSON ;; esac
BUDGET=${GPU_CHECK_BUDGET:-285}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
CHECK="$REPO/benchmarks/gpu_check.py"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlkdd-gpu-check.XXXXXX")
BG_PID=
cleanup() {
    [ -n "$BG_PID" ] && kill -- "-$BG_PID" 2>/dev/null
    if [ -n "${GPU_CHECK_KEEP:-}" ]; then echo "gpu_check: work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$WORK/parts" "$WORK/status"
"$PY" - "$WORK/header.json" "$BUDGET" <<'EOF' || { echo "gpu_check: $PY does not run" >&2; exit 2; }
import json, os, socket, sys, time
json.dump({"check": "benchmarks/gpu_check.sh", "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "device": os.environ["GPU_CHECK_DEVICE"], "budget_s": int(sys.argv[2]), "python": sys.executable},
          open(sys.argv[1], "w"))
EOF

left() { echo $((DEADLINE - $(date +%s))); }

# status NAME STATUS SECONDS: the script's word on a stage, for merge
status() {
    printf '{"status": "%s", "seconds_wall": %s}\n' "$2" "$3" > "$WORK/status/$1.json"
}

merge() { timeout -k 2 20 "$PY" "$CHECK" merge "$WORK" >/dev/null 2>&1 || echo "gpu_check: merge failed" >&2; }

# stage NAME LIMIT CMD...: run CMD under min(LIMIT, the budget left) seconds; record how it ended
stage() {
    local name=$1 limit=$2; shift 2
    local rest; rest=$(($(left) - 3))
    if [ "$rest" -lt 5 ]; then
        echo "gpu_check: $name skipped: the budget is spent"
        status "$name" "skipped: budget spent" 0; merge; return 0
    fi
    [ "$limit" -gt "$rest" ] && limit=$rest
    echo "gpu_check: -- $name (limit $limit s, $(left) s of the budget left)"
    local t0 rc; t0=$(date +%s)
    timeout -k 5 "$limit" "$@"
    rc=$?
    local secs=$(($(date +%s) - t0))
    case $rc in
        0) status "$name" ok "$secs" ;;
        124|137) status "$name" "timeout after $limit s" "$secs"; echo "gpu_check: $name stopped at its $limit s limit" ;;
        *) status "$name" "failed (exit $rc)" "$secs"; echo "gpu_check: $name failed (exit $rc)" ;;
    esac
    merge
    return $rc
}

# ---- 1. install from the bundle, before anything else (gpu_check.py install needs only the standard library)
SITE=$WORK/site
mkdir -p "$SITE"
if [ -n "${BUNDLE:-}" ]; then
    export BUNDLE
    stage install 90 "$PY" "$CHECK" install "$WORK" || {
        echo "gpu_check: could not install from BUNDLE=$BUNDLE (see $GPU_CHECK_JSON: stages.install)" >&2; exit 2; }
fi
# dlkdd: the bundle's wheel when it was installed above, else this tree, linked as `dlkdd`
if [ ! -d "$SITE/dlkdd" ]; then
    mkdir -p "$WORK/pp" && ln -s "$REPO" "$WORK/pp/dlkdd"
    export PYTHONPATH="$WORK/pp:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- 2. what runs here; stop if a package is missing or CUDA is not seen
stage env 60 "$PY" "$CHECK" env "$WORK" || {
    echo "gpu_check: the environment is not ready (see $GPU_CHECK_JSON: stages.env)" >&2; exit 2; }

# ---- 3. the data set, rendered in the background while the model-level stages run
rest=$(($(left) - 3))
data_limit=$((rest < 170 ? rest : 170))
echo "gpu_check: -- data, in the background (limit $data_limit s)"
data_t0=$(date +%s)
set -m  # its own process group, so a stop ends its generator processes too
( timeout -k 5 "$data_limit" "$PY" "$CHECK" data "$WORK" > "$WORK/data.log" 2>&1; echo $? > "$WORK/data.rc" ) &
BG_PID=$!
set +m

# ---- 4. model-level figures
stage model 60 "$PY" "$CHECK" model "$WORK"
stage enhancer 45 "$PY" "$CHECK" enhancer "$WORK"
stage loader 75 "$PY" "$CHECK" loader "$WORK"

# ---- 5. the pipeline through the CLI, on the generated set
wait "$BG_PID" 2>/dev/null
BG_PID=
cat "$WORK/data.log"
data_rc=$(cat "$WORK/data.rc" 2>/dev/null || echo 1)
data_secs=$(($(date +%s) - data_t0))
case $data_rc in
    0) status data ok "$data_secs" ;;
    124|137) status data "timeout after $data_limit s" "$data_secs" ;;
    *) status data "failed (exit $data_rc)" "$data_secs" ;;
esac
merge
# each verb needs the one before it: after a failure or a timeout the rest are marked, not run
prev=data prev_rc=$data_rc
for verb in enhance:90 teacher:90 soft-labels:45; do
    name=cli-${verb%%:*}
    if [ "$prev_rc" = 0 ]; then
        stage "$name" "${verb#*:}" "$PY" "$CHECK" "$name" "$WORK"
        prev_rc=$? prev=$name
    else
        status "$name" "not run: $prev did not finish" 0
    fi
done
merge

GPU_CHECK_FINAL=1 timeout -k 2 20 "$PY" "$CHECK" merge "$WORK"
echo "gpu_check: done in $(($(date +%s) - START)) s (budget $BUDGET s)"
