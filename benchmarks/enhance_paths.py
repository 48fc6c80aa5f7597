"""The enhance stage's paths on one dataset, each a fresh `dlkdd enhance` process into a fresh cache,
measured in one run: in this process (`enhance.workers=0`), dask forced (`enhance.workers=1`), and
the default (`enhance.workers=auto`); optionally in-process with dask's worker environment variable
MALLOC_TRIM_THRESHOLD_=65536 (`--paths in-process,in-process+trim`). Prints each path's stage seconds
and the ratios to in-process.

The enhancer stage runs once, into a base cache that every measured run copies (so each run does the
enhance stage alone, on the same enhancer); rounds interleave the paths, because the load of other
work on a shared machine comes and goes. The shards of every path are compared byte for byte.

    python benchmarks/enhance_paths.py [--data DIR] [--rounds N] [--paths A,B,...] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = {  # name -> the --set values that choose the path (and environment variables for the command)
    "in-process": (["enhance.workers=0"], {}),
    "dask": (["enhance.workers=1"], {}),
    "default": ([], {}),
    # what dask gives its workers unless told not to (distributed.nanny.pre-spawn-environ), here:
    "in-process+trim": (["enhance.workers=0"], {"MALLOC_TRIM_THRESHOLD_": "65536"}),
}


def dlkdd(cache: Path, data: Path | None, sets: list[str], verb: str, env: dict | None = None) -> float:
    cmd = [sys.executable, "-m", "dlkdd.cli", "--cache", str(cache), "--device", "cpu"]
    cmd += ["--data", str(data)] if data else []
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, verb], capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} {verb} failed:\n{proc.stderr[-3000:]}")
    if verb == "enhance" and "enhancer: running" in proc.stderr:  # the code changed since the base was made
        print("  (the enhancer stage ran again in this command: its time is in `command`, not in `stage`)")
    return wall


def shard_digest(cache: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((cache / "clips").glob("shard-*.h5")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="dataset root (default: the bundled sample)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for every run")
    ap.add_argument("--paths", default="in-process,dask,default", help=f"which, comma-separated: {', '.join(PATHS)}")
    args = ap.parse_args()
    names = args.paths.split(",")
    start = f"{time.strftime('%Y-%m-%d %H:%M:%S')}, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}"
    print(f"start {start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dlkdd-enhance-paths-") as tmp:
        base = Path(tmp) / "base"
        dlkdd(base, args.data, args.sets, "enhancer")
        times: dict[str, list[dict]] = {n: [] for n in names}
        digests: dict[str, set] = {n: set() for n in names}
        for r in range(args.rounds):
            for name in names:
                cache = Path(tmp) / f"{name}-{r}"
                shutil.copytree(base, cache)
                sets, env = PATHS[name]
                wall = dlkdd(cache, args.data, args.sets + sets, "enhance", env)
                rec = json.loads((cache / "stages" / "enhance.json").read_text())
                times[name].append({"wall": wall, "stage": rec["seconds"], "work": rec["summary"]["seconds"],
                                    "load": os.getloadavg()[0]})
                digests[name].add(shard_digest(cache))
                print(f"round {r + 1} {name:10s} command {wall:6.1f} s  stage {rec['seconds']:6.1f} s  "
                      f"work {rec['summary']['seconds']:6.1f} s  load {os.getloadavg()[0]:.2f}", flush=True)
                shutil.rmtree(cache)
    print(f"end {time.strftime('%Y-%m-%d %H:%M:%S')}, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    best = {n: min(t["stage"] for t in times[n]) for n in names}
    for n in names:
        med = statistics.median(t["stage"] for t in times[n])
        line = f"{n:10s} stage best {best[n]:6.1f} s, median {med:6.1f} s"
        if "in-process" in best and n != "in-process":
            per_round = [a["stage"] / b["stage"] for a, b in zip(times[n], times["in-process"])]
            line += (f"; / in-process: {best[n] / best['in-process']:.2f}x best "
                     f"[{statistics.median(per_round):.2f}x median of rounds]")
        print(line)
    every = sorted(set().union(*digests.values()))
    print(f"shards byte-identical across paths and rounds: {len(every) == 1} ({', '.join(every)})")


if __name__ == "__main__":
    main()
