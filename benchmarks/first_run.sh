#!/usr/bin/env bash
# First run (issue 21): the README's first command as a new user meets it. `dlkdd run` on the
# bundled sample, each time into an empty cache, in a fresh clone with a fresh venv; prints every
# run's seconds, then min / median / max, with `uptime`'s load at the start and at the end. The
# README's figure is the median, measured on an idle machine (nothing else running), with the date.
#
#   bash benchmarks/first_run.sh                      # clone + venv made in a temp folder, 3 runs
#   bash benchmarks/first_run.sh --clone DIR --venv DIR   # a clone and venv made beforehand:
#       git clone REPO DIR && python3 -m venv VENV && VENV/bin/pip install torch==2.13.0 -e DIR
#   bash benchmarks/first_run.sh --dry-run            # say what it would do; do nothing
#   bash benchmarks/first_run.sh --runs 0 ...         # set up (or check) clone and venv; time nothing
#
# Options:
#   --runs N     timed runs, each on an empty cache (default 3)
#   --repo DIR   repository to clone when no --clone is given (default: the one holding this script;
#                `git clone` takes its committed HEAD, not uncommitted changes)
#   --clone DIR  run in this clone instead of making one
#   --venv DIR   use this venv (dlkdd installed from the clone) instead of making one
#   --work DIR   where the temp clone, venv and caches go (default: a new folder under $TMPDIR)
#   --keep       keep the work folder (default: removed at the end, unless given with --work)
# Environment: PYTHON (interpreter for the venv, default python3); PIP_ARGS (extra pip arguments,
# e.g. "--index-url https://download.pytorch.org/whl/cpu"). Setup is not timed; each run's log is
# kept as run-K.log in the work folder (with --keep), and its stage seconds are printed.
set -euo pipefail

die() { echo "first_run: $*" >&2; exit 2; }

RUNS=3 REPO="" CLONE="" VENV="" WORK="" KEEP=0 DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || die "--runs needs a number"; RUNS=$2; shift 2 ;;
        --repo) [ $# -ge 2 ] || die "--repo needs a folder"; REPO=$2; shift 2 ;;
        --clone) [ $# -ge 2 ] || die "--clone needs a folder"; CLONE=$2; shift 2 ;;
        --venv) [ $# -ge 2 ] || die "--venv needs a folder"; VENV=$2; shift 2 ;;
        --work) [ $# -ge 2 ] || die "--work needs a folder"; WORK=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ "$RUNS" =~ ^[0-9]+$ ]] || die "--runs $RUNS: expected a whole number >= 0"
PY=${PYTHON:-python3}
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
[ -z "$CLONE" ] || [ -d "$CLONE" ] || die "--clone $CLONE: no such folder"
[ -z "$VENV" ] || [ -x "$VENV/bin/python" ] || die "--venv $VENV: no bin/python in it"
[ -n "$CLONE" ] || [ -d "$REPO/.git" ] || die "--repo $REPO: not a git repository"

if [ "$DRY" = 1 ]; then
    echo "work folder: ${WORK:-a new folder under ${TMPDIR:-/tmp}}"
    if [ -n "$CLONE" ]; then echo "clone: $CLONE (given)"; else echo "clone: git clone $REPO WORK/clone"; fi
    if [ -n "$VENV" ]; then echo "venv: $VENV (given)"
    else echo "venv: $PY -m venv WORK/venv && WORK/venv/bin/pip install ${PIP_ARGS:-}${PIP_ARGS:+ }torch==2.13.0 -e CLONE"; fi
    echo "runs: $RUNS x (cd CLONE && VENV/bin/dlkdd --cache WORK/cache-K run), each on an empty cache"
    exit 0
fi

GIVEN_WORK=$WORK
if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlkdd-first-run.XXXXXX"); else mkdir -p "$WORK"; fi
WORK=$(cd "$WORK" && pwd)
cleanup() { if [ "$KEEP" = 0 ] && [ -z "$GIVEN_WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

if [ -z "$CLONE" ]; then
    echo "setup: git clone $REPO $WORK/clone" >&2
    git clone --quiet "$REPO" "$WORK/clone"
    CLONE=$WORK/clone
fi
CLONE=$(cd "$CLONE" && pwd)
if [ -z "$VENV" ]; then
    echo "setup: $PY -m venv $WORK/venv; pip install ${PIP_ARGS:-}${PIP_ARGS:+ }torch==2.13.0 -e $CLONE" >&2
    "$PY" -m venv "$WORK/venv"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    "$WORK/venv/bin/pip" install --quiet ${PIP_ARGS:-} torch==2.13.0 -e "$CLONE"
    VENV=$WORK/venv
fi
VENV=$(cd "$VENV" && pwd)
[ -x "$VENV/bin/dlkdd" ] || die "$VENV: no dlkdd in it (pip install -e $CLONE there first)"
echo "clone $CLONE at $(git -C "$CLONE" rev-parse --short HEAD 2>/dev/null || echo '?'); venv $VENV" \
     "($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

echo "start $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores; uptime:$(uptime)"
seconds=()
for k in $(seq 1 "$RUNS"); do
    cache=$WORK/cache-$k
    rm -rf "$cache"
    t0=$(date +%s.%N)
    if ! (cd "$CLONE" && "$VENV/bin/dlkdd" --cache "$cache" run) >"$WORK/run-$k.log" 2>&1; then
        tail -20 "$WORK/run-$k.log" >&2
        KEEP=1
        die "run $k failed; its log: $WORK/run-$k.log"
    fi
    t1=$(date +%s.%N)
    s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    seconds+=("$s")
    stages=$("$VENV/bin/python" - "$cache" <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(p.read_text()) for p in Path(sys.argv[1], "stages").glob("*.json")]
rows.sort(key=lambda r: r.get("started") or "")
print(", ".join(f"{r['stage']} {r['seconds']:.1f}" for r in rows))
EOF
)
    echo "run $k: $s s ($stages); load:$(uptime | sed 's/.*load average://')"
    rm -rf "$cache"
done
echo "end $(date -u '+%Y-%m-%d %H:%M:%S UTC'); uptime:$(uptime)"
if [ "$RUNS" -gt 0 ]; then
    printf '%s\n' "${seconds[@]}" | sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "dlkdd run, %d runs on an empty cache: min %.1f s, median %.1f s, max %.1f s\n", NR, v[1], m, v[NR] }'
fi
