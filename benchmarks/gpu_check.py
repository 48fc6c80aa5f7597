"""The stages of `benchmarks/gpu_check.sh`, one per call (the script runs each under its own timeout).

    python benchmarks/gpu_check.py STAGE WORK    # STAGE: install env model enhancer loader data cli-VERB merge

Each stage writes WORK/parts/STAGE.json (atomically) when it ends; `merge` folds the parts and the
script's WORK/status/STAGE.json (exit status, seconds, timeouts) into one JSON file (GPU_CHECK_JSON)
with the four figures of issue 22:

- loader ratio: clips/s of the full training data path (the teacher's train loader, uint8 windows,
  plus the views made on the device, `loaders.input_fn`) over the raw uint8 read of the same clips
  (`ClipDataset[i]`), both on one core with `num_workers = 0`, as `benchmarks/loader.py` measures it,
  but with the views on the check's device (goal >= 0.5);
- teacher-epoch ratio: the train clips/s of the last epoch of `dlkdd teacher` (its metrics.jsonl,
  the CLI's training path: DataLoader workers, views on the device, autocast, the optimizer step)
  over the model-only step rate of the same model, batch and clip shape (random inputs already on
  the device, the same autocast, loss, optimizer and gradient clip);
- the model-only step rate itself: r2plus1d_18, 16x112x112 clips, batch 16, bf16 autocast on CUDA
  (what training uses where the GPU has bf16 units; fp32 on a CPU), in clips/s;
- Zero-DCE enhance frames/s at 320x240 (ARID's frame size): `enhancers.apply.enhance_frames`, the
  enhance stage's hot path (uint8 in, uint8 out, copies included), in bf16 and fp32, at the stage's
  batch (enhance.batch_frames) and at 64 frames; and the module alone on device tensors.

The data set is made here (`data`): ARID-shaped 320x240 MPEG-4 .avi clips from `dlkdd sample --like
arid` (make_arid_like), 3 per class, one generator process a class in parallel, then hard-linked
into more recordings and clips so one teacher epoch has hundreds of train videos without rendering
each (the throughput does not depend on the pixels). The CLI stages run `dlkdd --config configs/arid-gpu.toml` in this
process (so the peak GPU memory can be read) with the knobs below as --set values.

Knobs (environment, GPU_CHECK_*; defaults for cuda / cpu): DEVICE (cuda), MODEL (r2plus1d_18 /
r3d_tiny), BATCH (16 / 2), FRAMES (16 / 8), CROP (112 / 32), SHORT (128 / 64), STEPS (30 / 2),
ENH_FRAMES (512 / 2), ENH_PRECISIONS (bf16,fp32 / fp32), LOADER_CLIPS (512 / 16), ROUNDS (3 / 1),
GENERATORS (11 / 1: processes, at most one a class and one a spare core), CLASSES (11 / 2),
RECORDINGS (12 / 3), CLIPS (6 / 2), CLIP_FRAMES (48,72 / 24,30), EPOCHS (3 / 1), VIEWS (config's 8 /
2), COMPILE (0: train.compile off, else its compile time lands in the first epoch), CONFIG
(configs/arid-gpu.toml), JSON (output file).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
ARID_W, ARID_H = 320, 240


# ---------------------------------------------------------------------------- knobs and files

def cuda() -> bool:
    return os.environ.get("GPU_CHECK_DEVICE", "cuda") == "cuda"


def knob(name: str, gpu, cpu):
    """GPU_CHECK_<name>, else the default for the device (typed like the default)."""
    raw = os.environ.get(f"GPU_CHECK_{name}", "")
    default = gpu if cuda() else cpu
    if raw == "":
        return default
    return type(default)(raw) if default is not None else raw


def knobs() -> dict:
    return {"device": "cuda" if cuda() else "cpu", "model": knob("MODEL", "r2plus1d_18", "r3d_tiny"),
            "batch": knob("BATCH", 16, 2), "frames": knob("FRAMES", 16, 8), "crop": knob("CROP", 112, 32),
            "short_side": knob("SHORT", 128, 64), "steps": knob("STEPS", 30, 2),
            "enh_frames": knob("ENH_FRAMES", 512, 2),
            "enh_precisions": knob("ENH_PRECISIONS", "bf16,fp32", "fp32"),
            "loader_clips": knob("LOADER_CLIPS", 512, 16),
            "rounds": knob("ROUNDS", 3, 1), "generators": knob("GENERATORS", 11, 1),
            "classes": knob("CLASSES", 11, 2), "recordings": knob("RECORDINGS", 12, 3),
            "clips": knob("CLIPS", 6, 2), "clip_frames": knob("CLIP_FRAMES", "48,72", "24,30"),
            "epochs": knob("EPOCHS", 3, 1), "views": knob("VIEWS", None, 2),
            "compile": knob("COMPILE", 0, 0), "config": knob("CONFIG", "configs/arid-gpu.toml",
                                                              "configs/arid-gpu.toml")}


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def part(work: Path, name: str, record: dict) -> None:
    write_json(work / "parts" / f"{name}.json", record)
    print(f"gpu_check {name}: " + json.dumps(record, default=str)[:600], flush=True)


def config_path(k: dict) -> Path:
    p = Path(k["config"])
    return p if p.is_absolute() else ROOT / p


def overrides(k: dict) -> list[str]:
    """The --set values every CLI stage (and the model stage's config) runs under."""
    sets = [f"teacher.model={k['model']}", "teacher.pretrained=", f"teacher.epochs={k['epochs']}",
            f"teacher.batch_size={k['batch']}", "teacher.warmup_epochs=0.5",
            f"teacher.compile={'true' if k['compile'] else 'false'}",
            f"data.frames={k['frames']}", f"data.crop={k['crop']}", f"data.short_side={k['short_side']}",
            "enhance.workers=0"]  # in this process: no dask on the device machine
    if k["views"]:
        sets.append(f"data.views={k['views']}")
    if not cuda():  # a dry run: few fit steps, one test clip
        sets += ["enhancer.steps=10", "data.test_clips=1", "enhance.precision=fp32"]
    return sets


def check_config(k: dict):
    from dlkdd.pipeline.config import build_config
    return build_config(config_path(k), overrides(k))


def sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_mib() -> float | None:
    import torch
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda() and torch.cuda.is_available() else None


# ---------------------------------------------------------------------------- stages

# dist name in the bundle -> the module that shows it is installed
BUNDLED = {"numpy": "numpy", "h5py": "h5py", "decord": "decord", "click": "click", "rich": "rich",
           "markdown_it_py": "markdown_it", "mdurl": "mdurl", "pygments": "pygments", "av": "av", "tomli": "tomli"}


def stage_install(work: Path, k: dict) -> int:
    """From BUNDLE (gpu_bundle.sh's folder, or a folder of wheels): `pip install --no-index --find-links
    --no-deps --target WORK/site` of the wheels whose module does not import here, and of dlkdd (kept only
    if its files are this tree's). Only the standard library: nothing else is importable yet."""
    import importlib.util
    import subprocess
    import tarfile
    bundle, site = Path(os.environ["BUNDLE"]).resolve(), work / "site"
    if not bundle.is_dir():
        part(work, "install", {"error": f"BUNDLE={bundle} is not a folder"})
        return 2
    wheels = bundle
    if (bundle / "wheels.tar.xz").is_file():
        wheels = work / "wheels"
        with tarfile.open(bundle / "wheels.tar.xz") as tar:  # plain files only (the "data" filter where known)
            tar.extractall(wheels, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    files = sorted(p.name for p in wheels.glob("*.whl"))
    have = {name.split("-")[0].lower() for name in files}
    present = {dist: importlib.util.find_spec(mod) is not None for dist, mod in BUNDLED.items() if dist in have}
    want = [dist for dist, ok in present.items() if not ok]
    dlkdd = "dlkdd" in have and os.environ.get("GPU_CHECK_DLKDD", "wheel") == "wheel"
    want += ["dlkdd"] if dlkdd else []
    record = {"bundle": str(bundle), "wheels": files,
              "already_importable": sorted(d for d, ok in present.items() if ok), "installed": want,
              "target": str(site), "manifest": read_json(bundle / "MANIFEST.json")}
    if want:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
               "--no-deps", "--no-compile", "--target", str(site), *want]
        print("gpu_check: " + " ".join(cmd), flush=True)
        done = subprocess.run(cmd)
        if done.returncode:
            part(work, "install", {**record, "error": f"pip exited {done.returncode}"})
            return 2
    if dlkdd:  # the wheel's sources against this tree's: a stale bundle would measure old code
        installed = site / "dlkdd"
        differ = [p.relative_to(installed).as_posix() for p in installed.rglob("*.py")
                  if not (ROOT / p.relative_to(installed)).is_file()
                  or (ROOT / p.relative_to(installed)).read_bytes() != p.read_bytes()]
        record["dlkdd"] = "wheel" if not differ else f"tree: the wheel differs in {len(differ)} file(s)"
        if differ:
            print(f"gpu_check: the bundle's dlkdd wheel differs from this tree in {len(differ)} file(s) "
                  f"({', '.join(differ[:3])}): using the tree (rebuild: benchmarks/gpu_bundle.sh)", flush=True)
            import shutil
            shutil.rmtree(installed)
            for info in site.glob("dlkdd-*.dist-info"):
                shutil.rmtree(info)
    else:
        record["dlkdd"] = "tree"
    part(work, "install", record)
    return 0


def stage_env(work: Path, k: dict) -> int:
    """What runs here; fails (exit 2) if a package the check needs is missing or CUDA is not seen."""
    import importlib
    import importlib.metadata
    import platform
    found, missing = {}, []
    for mod in ("torch", "numpy", "h5py", "decord", "click", "rich", "av", "dlkdd"):
        try:
            m = importlib.import_module(mod)
            try:
                version = importlib.metadata.version(mod)
            except importlib.metadata.PackageNotFoundError:  # the tree, linked as dlkdd
                version = getattr(m, "__version__", "?")
            found[mod] = f"{version} ({Path(m.__file__).parent})"
        except Exception as e:  # noqa: BLE001 - any failure to import is reported the same way
            missing.append(f"{mod} ({type(e).__name__}: {e})")
    record = {"python": platform.python_version(), "executable": sys.executable, "packages": found,
              "missing": missing, "cores": len(os.sched_getaffinity(0)), "knobs": k}
    ok = not missing
    if "torch" in found:
        import torch
        record["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            record["gpu"] = torch.cuda.get_device_name(0)
            record["capability"] = list(torch.cuda.get_device_capability(0))
            record["bf16"] = torch.cuda.is_bf16_supported(including_emulation=False)
        elif cuda():
            record["error"] = "torch sees no CUDA device (GPU_CHECK_DEVICE=cpu for a dry run)"
            ok = False
    part(work, "env", record)
    return 0 if ok else 2


def stage_model(work: Path, k: dict) -> int:
    """Model-only train steps: random standardised clips on the device, the training step's arithmetic."""
    import torch
    import torch.nn.functional as F

    from dlkdd import models
    from dlkdd.pipeline.training.device import amp_dtype, autocast, fast_kernels
    from dlkdd.pipeline.training.optim import make_optimizer
    cfg = check_config(k)
    t = cfg.teacher
    device = torch.device(k["device"])
    fast_kernels(device)
    torch.manual_seed(0)
    classes = k["classes"]
    model = models.build(t.model, classes, dropout=t.dropout).to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    net = torch.compile(model) if t.compile else model
    optimizer = make_optimizer(model, t)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    B, T, S = t.batch_size, cfg.data.frames, cfg.data.crop
    x = torch.randn(B, 3, T, S, S, device=device)
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, classes, (B,), device=device)
    model.train()

    def step():
        with autocast(device, dtype):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = max(1, min(5, k["steps"]))
    t0 = time.perf_counter()
    for _ in range(warm):
        step()
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(k["steps"]):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    part(work, "model", {"model": t.model, "batch": B, "shape": [T, S, S], "dtype": str(dtype or torch.float32),
                         "optimizer": t.optimizer, "grad_clip": t.grad_clip, "compile": t.compile,
                         "channels_last": t.channels_last, "warmup_steps": warm, "warmup_s": round(warm_s, 3),
                         "steps": k["steps"], "seconds": round(seconds, 3),
                         "steps_per_s": round(k["steps"] / seconds, 3),
                         "clips_per_s": round(k["steps"] * B / seconds, 2), "peak_gpu_mib": peak_mib(),
                         "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)})
    return 0


def stage_enhancer(work: Path, k: dict) -> int:
    """Zero-DCE at 320x240: the enhance stage's `enhance_frames` (copies in and out) and the module alone."""
    import numpy as np
    import torch

    from dlkdd.pipeline.config import EnhanceConfig, EnhancerConfig
    from dlkdd.pipeline.enhancers.apply import DTYPES, enhance_frames, frames_per_batch
    from dlkdd.pipeline.enhancers.build import make_enhancer
    from dlkdd.pipeline.training.device import exact_float32
    device = torch.device(k["device"])
    module = make_enhancer(EnhancerConfig(kind="zero_dce"))
    frames = np.random.default_rng(0).integers(0, 60, (k["enh_frames"], ARID_H, ARID_W, 3), dtype=np.uint8)
    n = len(frames)
    rows = []
    head = {"kind": "zero_dce", "size": f"{ARID_W}x{ARID_H}", "frames": n}
    # bf16 first (the figure asked for); a CPU's bf16 convolutions run ~10-40x slower than fp32 (measured
    # on the dry run: 0.06 frames/s), so a CPU measures fp32 alone unless ENH_PRECISIONS says otherwise
    for precision in k["enh_precisions"].split(","):
        # the batch the stage takes here (enhance.batch_frames = auto: sized to the device's memory)
        stage_batch = frames_per_batch(module, (ARID_H, ARID_W), device, EnhanceConfig().batch_frames, precision)
        head[f"stage_batch_frames_{precision}"] = stage_batch
        for batch in sorted({min(stage_batch, n), min(64, n)}):
            enhance_frames(module, frames[:batch], batch=batch, device=device, precision=precision)  # warm-up
            t0 = time.perf_counter()
            enhance_frames(module, frames, batch=batch, device=device, precision=precision)
            s = time.perf_counter() - t0
            rows.append({"path": "enhance_frames", "precision": precision, "batch": batch,
                         "frames_per_s": round(n / s, 2)})
            part(work, "enhancer", {**head, "rows": rows, "peak_gpu_mib": peak_mib()})  # kept if a later row hangs
        # the module alone: frames already on the device as floats, no copies, no rounding to uint8
        dtype = DTYPES[precision]
        module.to(device, dtype).eval()
        batch = min(64, n)
        xb = torch.rand(batch, 3, ARID_H, ARID_W, device=device).to(dtype)
        with torch.inference_mode(), exact_float32():
            module.enhance(xb)
            sync(device)
            reps = max(1, n // batch)
            t0 = time.perf_counter()
            for _ in range(reps):
                module.enhance(xb)
            sync(device)
            s = time.perf_counter() - t0
        rows.append({"path": "module alone", "precision": precision, "batch": batch,
                     "frames_per_s": round(reps * batch / s, 2)})
        part(work, "enhancer", {**head, "rows": rows, "peak_gpu_mib": peak_mib()})
    return 0


def stage_loader(work: Path, k: dict) -> int:
    """benchmarks/loader.py's (a) raw read, (b) full path and (d) loader alone, views on the check's device."""
    import tempfile

    import torch
    sys.path.insert(0, str(BENCH))
    from _common import interleaved
    from loader import STATS, one_core, write_cache

    from dlkdd.pipeline.config import Config, TrainConfig
    from dlkdd.pipeline.datasets.clips import ViewDataset
    from dlkdd.pipeline.training.loaders import begin_epoch, input_fn, train_loader
    where = one_core()
    device = torch.device(k["device"])
    cfg = Config()
    d = cfg.data
    d.frames, d.short_side, d.crop, d.views, d.min_scale = k["frames"], k["short_side"], k["crop"], 4, 0.7
    T, H = d.frames, d.short_side
    W = 2 * round(H * 4 / 3 / 2)  # ARID's 4:3 at this short side (128 -> 170)
    tcfg = TrainConfig(batch_size=k["batch"], num_workers=0, seed=0)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        t0 = time.perf_counter()
        clips = write_cache(Path(tmp), k["loader_clips"], T, H, W)
        write_s = time.perf_counter() - t0
        data = ViewDataset(clips, d, seed=0, stats=STATS)
        loader = train_loader(data, tcfg, device)
        to_input = input_fn(data, device)

        def raw():
            begin_epoch(loader, 0)
            for _, i in loader.sampler:
                clips[i]

        def full():
            begin_epoch(loader, 0)
            for x, _, _ in loader:
                to_input(x)
            sync(device)

        def alone():
            begin_epoch(loader, 0)
            for _ in loader:
                pass

        times = interleaved({"raw": raw, "full": full, "loader": alone}, rounds=k["rounds"])
        n = len(clips)
        clips.close()
    rate = {name: n / min(v) for name, v in times.items()}
    part(work, "loader", {"clips": n, "clip": [T, H, W], "crop": d.crop, "views": d.views, "batch": tcfg.batch_size,
                          "num_workers": 0, "where": where, "rounds": k["rounds"], "cache_write_s": round(write_s, 2),
                          "raw_clips_per_s": round(rate["raw"], 1), "full_clips_per_s": round(rate["full"], 1),
                          "loader_clips_per_s": round(rate["loader"], 1),
                          "ratio_full_raw": round(rate["full"] / rate["raw"], 3),
                          "ratio_loader_raw": round(rate["loader"] / rate["raw"], 3),
                          "runs_s": {name: [round(s, 3) for s in v] for name, v in times.items()}})
    return 0


def _generate(job: tuple) -> dict:
    """One class's unique clips (a generator process, pinned to `cpu` when given): `make_arid_like` with
    one class, 3 recordings of 1 clip, seeded by the class, so the class's clips differ from the others'."""
    out, seed, frames, cpu = job
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from dlkdd.pipeline.datasets.sample import make_arid_like
    return make_arid_like(out, seed=seed, classes=1, recordings_per_class=3, clips_per_recording=1, frames=frames)


def stage_data(work: Path, k: dict) -> int:
    """ARID-shaped 320x240 clips, 3 rendered per class by parallel generator processes (one job per class),
    hard-linked into `recordings` x `clips` videos per class under ARID's names and lists."""
    from concurrent.futures import ProcessPoolExecutor

    from dlkdd.pipeline.datasets.expected import ARID_CLASSES
    from dlkdd.pipeline.datasets.sample import ARID_SPLITS, MAPPING_TABLE, arid_list
    t0 = time.perf_counter()
    frames = tuple(int(v) for v in str(k["clip_frames"]).split(","))
    names = sorted(ARID_CLASSES)[:k["classes"]]
    cores = sorted(os.sched_getaffinity(0))
    # off the first two cores (the loader stage pins core 0; the model stages feed the GPU) where there are spare ones
    spare = cores[2:] if len(cores) >= 4 else []
    P = max(1, min(k["generators"], len(names), len(spare) or 1))
    # one job per class; each renders the generator's first class (the motion is that one's: a throughput
    # check needs the size and codec of ARID's clips, not their content), filed under its own class
    jobs = [(str(work / "gen" / name), c, frames, spare[-1 - c % len(spare)] if spare else None)
            for c, name in enumerate(names)]
    with ProcessPoolExecutor(max_workers=P) as pool:
        stats = list(pool.map(_generate, jobs))
    gen_s = time.perf_counter() - t0
    root = work / "data"
    R, B = k["recordings"], k["clips"]
    rows = {"train": [], "test": []}
    for label, name in enumerate(names):
        unique = sorted((work / "gen" / name).glob("*/*.avi"))
        (root / name).mkdir(parents=True, exist_ok=True)
        for r in range(1, R + 1):
            for b in range(1, B + 1):
                rel = f"{name}/{name}_{r}_{b}.avi"
                src = unique[((r - 1) * B + b - 1) % len(unique)]
                try:
                    os.link(src, root / rel)
                except OSError:  # another file system: a copy
                    (root / rel).write_bytes(src.read_bytes())
                rows["test" if r == R else "train"].append((label, rel))  # one whole recording tests
    for split in ARID_SPLITS:  # the three splits alike: the config reads split 1
        for which, entries in rows.items():
            path = root / arid_list(split, which)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{i}\t{label}\t{rel}\n" for i, (label, rel) in enumerate(entries)))
    (root / MAPPING_TABLE).write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    rendered = sum(s["videos"] for s in stats)
    part(work, "data", {"root": str(root), "rendered_clips": rendered, "generators": P, "render_s": round(gen_s, 1),
                        "pinned_cpus": [j[3] for j in jobs], "size": f"{ARID_W}x{ARID_H}", "clip_frames": list(frames),
                        "classes": len(names), "recordings_per_class": R, "clips_per_recording": B,
                        "videos": len(rows["train"]) + len(rows["test"]), "train_list_videos": len(rows["train"]),
                        "test_videos": len(rows["test"]), "rendered_mb": round(sum(s["bytes"] for s in stats) / 1e6, 1),
                        "seconds": round(time.perf_counter() - t0, 1)})
    return 0


CLI_STAGES = {"enhance": ("enhancer", "enhance"), "teacher": ("teacher",), "soft-labels": ("soft-labels",)}


def stage_cli(work: Path, k: dict, verb: str) -> int:
    """`dlkdd --config CONFIG --data DATA --cache CACHE --device D --set ... VERB` in this process."""
    import click
    import torch

    from dlkdd.cli import cli
    from dlkdd.pipeline.stages.run import resolve_config
    from dlkdd.pipeline.stages.table import pipeline_graph
    data, cache = work / "data", work / "cache"
    args = ["--config", str(config_path(k)), "--data", str(data), "--cache", str(cache), "--device", k["device"]]
    for s in overrides(k):
        args += ["--set", s]
    graph = pipeline_graph(resolve_config(config_path(k), overrides(k), data), cache)
    out_dirs = {name: str(graph.out_dir(name)) for name in CLI_STAGES[verb]}
    records = {name: str(graph.record_path(name)) for name in CLI_STAGES[verb]}
    # written first: merge reads what a stage stopped by its timeout left (the teacher's finished epochs)
    write_json(work / "parts" / f"cli-{verb}.json", {"args": args, "out_dirs": out_dirs, "records": records,
                                                     "finished": False})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rc = 0
    try:
        cli.main(args=[*args, verb], prog_name="dlkdd", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        rc = 1
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    seconds = time.perf_counter() - t0
    summaries = {}
    for name, path in records.items():
        rec = read_json(Path(path)) or {}
        summaries[name] = {"seconds": rec.get("seconds"), "summary": rec.get("summary")}
    part(work, f"cli-{verb}", {"args": args, "out_dirs": out_dirs, "records": records, "finished": rc == 0,
                               "rc": rc, "seconds": round(seconds, 2), "peak_gpu_mib": peak_mib(),
                               "stages": summaries})
    return rc


# ---------------------------------------------------------------------------- merge

def _teacher_epochs(cli_part: dict | None) -> list[dict]:
    if not cli_part:
        return []
    path = Path(cli_part["out_dirs"]["teacher"]) / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _enhance_figures(work: Path, cli_part: dict | None) -> dict:
    if not cli_part:
        return {}
    stages = cli_part.get("stages", {})
    out = {"enhancer_fit_s": (stages.get("enhancer") or {}).get("seconds")}
    enh = stages.get("enhance") or {}
    summary = enh.get("summary") or {}
    index = read_json(Path(cli_part["out_dirs"]["enhance"]) / "index.json")
    out.update({"enhance_record_s": enh.get("seconds"), "enhance_work_s": summary.get("seconds"),
                "videos_per_s": summary.get("videos_per_s")})
    if index and summary.get("seconds"):
        out["clips"] = len(index["clips"])
        out["frames_per_s"] = round(len(index["clips"]) * index["T"] / summary["seconds"], 1)
    return out


def stage_merge(work: Path, k: dict) -> int:
    parts = {p.stem: read_json(p) for p in sorted((work / "parts").glob("*.json"))}
    status = {p.stem: read_json(p) for p in sorted((work / "status").glob("*.json"))}
    header = read_json(work / "header.json") or {}
    model, loader, enhancer = parts.get("model"), parts.get("loader"), parts.get("enhancer")
    epochs = _teacher_epochs(parts.get("cli-teacher"))
    figures = {}
    if loader:
        figures["loader_ratio_full_over_raw"] = loader["ratio_full_raw"]
        figures["loader_ratio_goal"] = 0.5
    if model:
        figures["model_only_clips_per_s"] = model["clips_per_s"]
        figures["model_only"] = f"{model['model']} {'x'.join(map(str, model['shape']))} batch {model['batch']} " \
                                f"{model['dtype']}"
    if epochs:
        last = epochs[-1]
        figures["teacher_epoch_clips_per_s"] = [round(e["clips_per_s"], 2) for e in epochs]
        if model:
            figures["teacher_epoch_ratio_last_over_model_only"] = round(last["clips_per_s"] / model["clips_per_s"], 3)
    if enhancer:
        for row in enhancer["rows"]:
            figures[f"zero_dce_320x240_{row['precision']}_{row['path'].replace(' ', '_')}_b{row['batch']}_fps"] = \
                row["frames_per_s"]
    enhance = _enhance_figures(work, parts.get("cli-enhance"))
    if enhance:
        figures["enhance_stage"] = enhance
    stages = {}
    for name in sorted(set(parts) | set(status)):
        if name == "merge":
            continue
        stages[name] = {**(status.get(name) or {"status": "running or not reached"}), **(parts.get(name) or {})}
    doc = {**header, "figures": figures, "stages": stages, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    target = Path(os.environ.get("GPU_CHECK_JSON") or (work / "gpu_check.json"))
    write_json(target, doc)
    if os.environ.get("GPU_CHECK_FINAL"):
        print(f"gpu_check: {target}")
        for key, value in figures.items():
            print(f"  {key}: {value}")
        for name, st in stages.items():
            print(f"  stage {name:<16} {st.get('status')} ({st.get('seconds_wall', '?')} s)")
    return 0


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    stage, work = sys.argv[1], Path(sys.argv[2])
    k = knobs()
    if stage.startswith("cli-"):
        return stage_cli(work, k, stage[4:])
    run = {"install": stage_install, "env": stage_env, "model": stage_model, "enhancer": stage_enhancer,
           "loader": stage_loader, "data": stage_data, "merge": stage_merge}.get(stage)
    if run is None:
        print(f"gpu_check.py: unknown stage {stage!r}", file=sys.stderr)
        return 2
    return run(work, k)


if __name__ == "__main__":
    sys.exit(main())
