#!/usr/bin/env bash
# The wheels `benchmarks/gpu_check.sh` needs beyond torch, for a machine that has no network (the lent
# GPU machine): built here, carried there, installed there with `pip install --no-index`.
#
#   bash benchmarks/gpu_bundle.sh PYVER [OUTDIR]        # e.g. bash benchmarks/gpu_bundle.sh 3.12
#   BUNDLE=OUTDIR bash benchmarks/gpu_check.sh           # there: installs from it before anything else
#
# PYVER is the target machine's Python (major.minor; the lent H200's python3 is 3.12). OUTDIR defaults to
# .gpu-bundle in the repository root; it ignores itself (a `.gitignore` of `*` inside), so it is never
# committed, and travels to a device machine when a call names it in `carry`.
#
# What it holds, all x86-64 Linux (manylinux) wheels for CPython PYVER, no dependencies resolved
# (`pip download --no-deps`, so nothing else sneaks in; the script then checks that every requirement
# of every wheel is in the bundle or is torch): decord (reads videos), h5py and numpy (the clip shards;
# torch's wheel does not bring numpy), click, rich and rich's markdown-it-py, mdurl and pygments (the
# CLI), av (PyAV: `dlkdd sample` writes the check's videos with it), tomli on Python < 3.11, and a
# wheel of dlkdd itself built from this working tree (`pip wheel --no-deps`). Not dask: the check runs
# the enhance stage in its process (enhance.workers = 0). Not matplotlib: only `evaluate` plots.
#
# Size: as downloaded the wheels are ~72 MB (av 35, numpy 16, decord 14), over the 60 MB the issue
# allows (a device call carries 64 MiB with the working tree). Wheels are deflate zips; the bundle
# stores each one uncompressed (the same files, so the same RECORD hashes) inside one wheels.tar.xz,
# which xz packs to ~50 MB. gpu_check.sh unpacks it (Python's tarfile: no xz binary needed) and
# installs with `pip install --no-index --find-links`. MANIFEST.json lists each wheel, its version and
# sha256 (of the stored wheel), the target Python and the digest of the dlkdd sources it was built from.
# The script fails if the folder is over GPU_BUNDLE_LIMIT_MB (default 60).
#
# Needs: pip that reaches a package index (or a local wheel directory pip is configured for), and
# setuptools >= 70.1 (or >= 62.3 with `wheel`) for the dlkdd wheel, else pip builds it in an isolated environment
# (setuptools from the index).
# Environment: PYTHON (the interpreter whose pip runs here, default python3; any version: the
# downloads are for PYVER), GPU_BUNDLE_LIMIT_MB, GPU_BUNDLE_XZ (xz preset 0-9, default 6; the
# packing takes a few minutes on one core).
set -euo pipefail
usage="usage: bash benchmarks/gpu_bundle.sh PYVER [OUTDIR]   (PYVER: the target's Python, e.g. 3.12)"
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "$usage" >&2; exit 2; }
PYVER=$1
[[ $PYVER =~ ^3\.([0-9]+)$ ]] || { echo "gpu_bundle: PYVER must be 3.N, got '$PYVER'; $usage" >&2; exit 2; }
MINOR=${BASH_REMATCH[1]}
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${2:-$REPO/.gpu-bundle}
LIMIT_MB=${GPU_BUNDLE_LIMIT_MB:-60}
XZ=${GPU_BUNDLE_XZ:-6}

PACKAGES="decord h5py numpy click rich markdown-it-py mdurl pygments av"
[ "$MINOR" -lt 11 ] && PACKAGES="$PACKAGES tomli"  # dlkdd reads TOML with tomllib from 3.11 on

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dlkdd-gpu-bundle.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/wheels" "$TMP/src"

echo "gpu_bundle: downloading for CPython $PYVER, manylinux x86_64: $PACKAGES"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
    -d "$TMP/wheels" $PACKAGES

# dlkdd from this working tree (tracked and untracked-but-not-ignored files), built in a copy so the
# build leaves nothing (build/, *.egg-info) in the tree
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
        [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -C "$TMP/src" -xf -
else
    tar -C "$REPO" --exclude=.venv --exclude=.gpu-bundle --exclude=__pycache__ -cf - . | tar -C "$TMP/src" -xf -
fi
isolation=--no-build-isolation
# without isolation only where setuptools can build a wheel itself (70.1+, or the wheel package beside it)
"$PY" - 2>/dev/null <<'EOF' || isolation=
import importlib.util, sys, setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
sys.exit(0 if v >= (70, 1) or (v >= (62, 3) and importlib.util.find_spec("wheel")) else 1)
EOF
echo "gpu_bundle: building the dlkdd wheel from $REPO"
"$PY" -m pip wheel --quiet --no-deps $isolation -w "$TMP/wheels" "$TMP/src" >/dev/null

mkdir -p "$TMP/out"
"$PY" - "$TMP/wheels" "$TMP/out" "$PYVER" "$XZ" "$TMP/src" <<'EOF'
"""Check every wheel's requirements are in the bundle (or are torch), store the wheels uncompressed in
one wheels.tar.xz, and write MANIFEST.json."""
import hashlib, io, json, re, sys, tarfile, time, zipfile
from pathlib import Path

wheels, out, pyver, preset, src = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
try:
    from packaging.markers import Marker
except ImportError:  # pip vendors it
    from pip._vendor.packaging.markers import Marker


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


env = {"python_version": pyver, "python_full_version": pyver + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
files = sorted(wheels.glob("*.whl"))
have = {norm(f.name.split("-")[0]) for f in files}
rows, unmet = [], []
for f in files:
    with zipfile.ZipFile(f) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    fields = dict(line.split(": ", 1) for line in text.splitlines()[:3] if ": " in line)
    name, version = fields.get("Name", f.name.split("-")[0]), fields.get("Version", "?")
    for line in text.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        req = line[len("Requires-Dist: "):]
        spec, _, marker = req.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue  # an extra, or another platform's or Python's
        dep = norm(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0])
        if dep not in have and dep not in ("torch", "dask", "matplotlib"):
            unmet.append(f"{name} needs {spec.strip()}")
    rows.append({"name": name, "version": version, "file": f.name})
if unmet:
    sys.exit("gpu_bundle: requirements not in the bundle: " + "; ".join(unmet))

stored = out / "stored"
stored.mkdir()
for row in rows:  # the same members, uncompressed: xz then packs the whole folder as one stream
    src_whl, dst = wheels / row["file"], stored / row["file"]
    with zipfile.ZipFile(src_whl) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)  # before the copy of its entry changes how it is stored
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.external_attr, entry.compress_type = info.external_attr, zipfile.ZIP_STORED
            zout.writestr(entry, data)
    row["sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()
    row["downloaded_bytes"] = src_whl.stat().st_size
t0 = time.perf_counter()
with tarfile.open(out / "wheels.tar.xz", "w:xz", preset=preset) as tar:
    for row in rows:
        tar.add(stored / row["file"], arcname=row["file"])
for f in stored.iterdir():
    f.unlink()
stored.rmdir()
# what the dlkdd wheel was built from: gpu_check.sh compares the installed files with the tree it runs in
digest = hashlib.sha256()
for p in sorted(src.rglob("*.py")):
    digest.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes())
manifest = {"python": pyver, "platform": "manylinux x86_64", "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "xz_preset": preset, "pack_seconds": round(time.perf_counter() - t0, 1),
            "dlkdd_sources_sha256": digest.hexdigest(), "wheels": rows}
(out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
(out / ".gitignore").write_text("# made by benchmarks/gpu_bundle.sh: never committed\n*\n")
for row in rows:
    print(f"  {row['file']:<75} {row['downloaded_bytes'] / 1e6:6.1f} MB as downloaded")
EOF

bytes=$(du -sb "$TMP/out" | cut -f1)
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
if awk -v b="$bytes" -v l="$LIMIT_MB" 'BEGIN { exit !(b > l * 1e6) }'; then
    echo "gpu_bundle: the bundle is $mb MB, over the $LIMIT_MB MB limit (GPU_BUNDLE_LIMIT_MB); nothing written to $OUTDIR" >&2
    exit 1
fi
if [ -e "$OUTDIR" ] && [ ! -f "$OUTDIR/MANIFEST.json" ]; then  # only ever replace a bundle
    echo "gpu_bundle: $OUTDIR exists and is not a bundle (no MANIFEST.json): not replaced" >&2
    exit 1
fi
rm -rf "$OUTDIR"
mkdir -p "$(dirname "$OUTDIR")"
mv "$TMP/out" "$OUTDIR"
echo "gpu_bundle: $OUTDIR: $mb MB in all (limit $LIMIT_MB MB): wheels.tar.xz + MANIFEST.json, for CPython $PYVER"
