#!/usr/bin/env bash
# GPU check (issue 12), under 5 minutes: on a generated set, run the enhance stage, one teacher
# epoch (autocast, as training does on CUDA) and the soft-labels pass; print each one's
# throughput and peak GPU memory (torch.cuda.max_memory_allocated).
#
#   bash benchmarks/gpu_check.sh                                  # from the repo root, on CUDA
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_VIDEOS=2 bash benchmarks/gpu_check.sh   # dry run on a CPU, tiny
#
# Needs Python 3.11+ with these packages importable (nothing is installed; no network needed):
#   torch (a CUDA build for the real check), numpy, decord, h5py, click, rich, av (writes the
#   generated videos). dask/distributed are not needed: the stage runs in-process (workers = 0).
# The script links the repo as `dlkdd` in a temp folder and puts that on PYTHONPATH, so no
# `pip install` is needed. Environment knobs: PYTHON (interpreter, default python3),
# GPU_CHECK_DEVICE (cuda|cpu, default cuda), GPU_CHECK_VIDEOS (videos per class, default 40),
# GPU_CHECK_KIND (enhancer kind, default zero_dce++), GPU_CHECK_SIZE (frame side, default 112),
# GPU_CHECK_DATA (an existing dataset to use instead of generating one: then av is not needed).
set -euo pipefail
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PER_CLASS=${GPU_CHECK_VIDEOS:-40}
KIND=${GPU_CHECK_KIND:-zero_dce++}
SIZE=${GPU_CHECK_SIZE:-112}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

missing=()
NEED="torch numpy decord h5py click rich"
[ -n "${GPU_CHECK_DATA:-}" ] || NEED="$NEED av"  # av writes the generated videos
for mod in $NEED; do
    "$PY" -c "import $mod" >/dev/null 2>&1 || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_check: missing Python package(s): ${missing[*]} (needs torch numpy decord h5py click rich av; $PY)" >&2
    exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device (set GPU_CHECK_DEVICE=cpu for a dry run)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlkdd-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/pp" && ln -s "$REPO" "$WORK/pp/dlkdd"
export PYTHONPATH="$WORK/pp${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$WORK" "$DEVICE" "$PER_CLASS" "$KIND" "$SIZE" "${GPU_CHECK_DATA:-}" <<'EOF'
import json, subprocess, sys, time
from pathlib import Path
work, device, per_class, kind, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
given = sys.argv[6]
import torch
from rich.console import Console
from dlkdd.pipeline.config import Config, set_value, validate
from dlkdd.pipeline.graph import Graph, execute

t0 = time.perf_counter()
data = Path(given).resolve() if given else work / "data"
if not given:
    subprocess.run([sys.executable, "-m", "dlkdd.cli", "sample", str(data), "--seed", "1",
                    "--videos-per-class", str(per_class), "--test-per-class", str(max(1, per_class // 4)),
                    "--day-videos-per-class", "0", "--size", str(size)], check=True, stdout=subprocess.DEVNULL)
gen_s = time.perf_counter() - t0
cfg = Config()
for key, value in {"data.root": str(data), "data.short_side": size, "data.crop": min(112, size),
                   "enhancer.kind": kind, "enhancer.steps": 50, "enhance.workers": 0,
                   "teacher.epochs": 1, "teacher.batch_size": 16, "soft_labels.batch_size": 32}.items():
    set_value(cfg, key, value)
validate(cfg)
graph = Graph(cfg, work / "cache")
console = Console(quiet=True)
cuda = device == "cuda"
name = torch.cuda.get_device_name(0) if cuda else "cpu"
print(f"gpu_check: {name}, torch {torch.__version__}, {per_class} videos/class of {size}px "
      f"(generated in {gen_s:.1f} s), enhancer {kind}")
rows = []
for stage in ("enhancer", "enhance", "teacher", "soft-labels"):
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    execute(graph, stage, device, console)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    record = json.loads((work / "cache" / "stages" / f"{stage}.json").read_text())
    summary = record.get("summary", {}) if isinstance(record, dict) else {}
    rows.append((stage, seconds, peak, summary))
index = json.loads((graph.out_dir("enhance") / "index.json").read_text())
clips = len(index["clips"])
train = sum(c["split"] == "train" for c in index["clips"])
labelled = sum(c["split"] in ("train", "val") for c in index["clips"])  # soft labels: train + validation
frames = clips * index["T"]
views = cfg.data.views
print(f"{'stage':<12} {'seconds':>8} {'throughput':>26} {'peak GPU MiB':>13}")
for stage, seconds, peak, summary in rows:
    rate = {"enhancer": f"{cfg.enhancer.steps / seconds:.1f} fit steps/s",
            "enhance": f"{frames / seconds:.0f} frames/s ({clips} clips)",
            "teacher": f"{train / seconds:.1f} train clips/s (1 epoch)",
            "soft-labels": f"{labelled * views / seconds:.1f} clip-views/s"}[stage]
    print(f"{stage:<12} {seconds:8.1f} {rate:>26} {peak:13.0f}")
print(f"gpu_check: done in {time.perf_counter() - t0:.0f} s")
EOF
