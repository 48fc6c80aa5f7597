"""The `enhance` stage, measured against its baselines side by side in one run.

(a) throughput: `enhance_frames` (batch = `enhance.batch_frames`) vs a naive loop that
    enhances one frame at a time as the authors' test script does (per frame: to a
    float tensor, forward, back to uint8), Zero-DCE++ and Zero-DCE, at the clip size
    of the bundled sample (64x64) and at 112x112 and 240x320. Target >= 3x.
(b) efficiency: the enhancer's GFLOP/s (FLOPs counted analytically: conv MACs x 2 plus
    the curve iterations) over a 2048^3 fp32 matmul's GFLOP/s, same threads, measured
    in the same rounds. Target >= 0.4. Alternatives that `enhance_frames` could adopt
    (batch 8, channels_last weights, convs split instead of run on concatenated inputs
    with in-place activations, one thread) are timed in the same rounds at 64x64, with
    the page faults of batch 64 vs 8, and OMP_WAIT_POLICY=PASSIVE in a fresh process.
    (mkldnn off is not timed: its depthwise conv is ~10x slower, which only costs time.)
(c) reuse: `ClipDataset` clips/s reading the shards the real `enhance` stage wrote
    (Zero-DCE++, fitted for a few steps, `enhance.workers=0`) vs making the same clips
    again from video with `stages.enhancing.task.process_videos`. Target >= 20x.
(d) memory: peak RSS of `dlkdd ... enhance` on 4x the videos over 1x, each run in a fresh
    process (in-process `enhance.workers=0`, and the default dask LocalCluster, whose
    worker process is reported separately). Target <= 1.2.

All torch work runs with 2 threads (`--threads`). Timings interleave our way and the
baseline round by round; ratios use the best round of each (median of per-round ratios
in brackets), because other work on a shared 2-core machine comes and goes.

    python benchmarks/enhance.py [--videos N] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import interleaved, markdown_table, speedup, verdict  # noqa: E402
from rich.console import Console  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dlkdd.models import zero_dce  # noqa: E402
from dlkdd.pipeline.config import Config, DataConfig, EnhancerConfig, validate  # noqa: E402
from dlkdd.pipeline.datasets.decode import VideoError, decode_clips  # noqa: E402
from dlkdd.pipeline.datasets.index import DatasetError  # noqa: E402
from dlkdd.pipeline.datasets.shards import ClipDataset  # noqa: E402
from dlkdd.pipeline.datasets.splits import dataset_root, read_dataset  # noqa: E402
from dlkdd.pipeline.datasets.views import fit_size  # noqa: E402
from dlkdd.pipeline.engine.run import execute  # noqa: E402
from dlkdd.pipeline.enhancers.apply import CPU_BATCH_FRAMES, enhance_frames  # noqa: E402
from dlkdd.pipeline.enhancers.build import make_enhancer  # noqa: E402
from dlkdd.pipeline.stages.enhancing.plan import clip_size, clips_per_split, list_jobs  # noqa: E402
from dlkdd.pipeline.stages.enhancing.task import process_videos  # noqa: E402
from dlkdd.pipeline.stages.table import pipeline_graph  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
WEIGHTS = ROOT.parent / "shared" / "weights" / "zero-dce"
WEIGHT_FILES = {"zero_dce": "ZeroDCE_Epoch99.pth", "zero_dce++": "ZeroDCEpp_Epoch99.pth"}
KINDS = ("zero_dce++", "zero_dce")
TARGETS = {"a": 3.0, "b": 0.4, "c": 20.0, "d": 1.2}
SUMMARY: list[list[object]] = []  # rows of the final table


def say(text: str = "") -> None:
    print(text, flush=True)


def _videofix():
    spec = importlib.util.spec_from_file_location("videofix", ROOT / "tests" / "videofix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- (a) and (b): the enhancer itself ------------------------------------------------------------

def load_model(kind: str) -> tuple[nn.Module, str]:
    path = WEIGHTS / WEIGHT_FILES[kind]
    if path.is_file():
        return zero_dce.from_checkpoint(path, kind=kind), f"authors' weights {path.name}"
    return make_enhancer(EnhancerConfig(kind=kind)), "random init (seed 0)"


def enhancer_flops(model: nn.Module, h: int, w: int) -> float:
    """FLOPs to enhance one h x w frame: 2 x conv MACs (at the curve resolution) + 8 curve steps."""
    s = int(getattr(model, "scale_factor", 1))
    ch, cw = (h // s, w // s) if s > 1 else (h, w)
    macs = sum(m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
               for m in model.modules() if isinstance(m, nn.Conv2d)) * ch * cw
    curve = zero_dce.ITERATIONS * 3 * 4 * h * w  # x*x, - x, * r, + x per channel and iteration
    return 2.0 * macs + curve


@torch.no_grad()
def naive_enhance(model: nn.Module, frames: np.ndarray) -> np.ndarray:
    """The authors' lowlight_test.py, per frame: /255 in numpy, to tensor, forward, save_image's uint8."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        x = torch.from_numpy(frame / 255.0).float().permute(2, 0, 1).unsqueeze(0)
        enhanced, _ = model(x)
        out[i] = enhanced[0].mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    return out


class SplitCatInplace(nn.Module):
    """The same network and weights, computed with fewer memory passes.

    A conv over `cat([a, b], 1)` is the sum of two convs over a and b with the weight's
    input channels split, so no concatenated tensor is written and read again; ReLU,
    tanh and the curve steps run in place. Candidate for `models/zero_dce.py`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if int(getattr(model, "scale_factor", 1)) != 1:
            raise ValueError("SplitCatInplace: scale_factor 1 only")
        self.m = model
        self.pp = model.kind == "zero_dce++"

    def _conv(self, layer: nn.Module, *parts: torch.Tensor) -> torch.Tensor:
        out, c0 = None, 0
        for part in parts:
            c = part.shape[1]
            if self.pp:
                d, p = layer.depth_conv, layer.point_conv
                part = F.conv2d(part, d.weight[c0:c0 + c], d.bias[c0:c0 + c], padding=1, groups=c)
                y = F.conv2d(part, p.weight[:, c0:c0 + c], p.bias if c0 == 0 else None)
            else:
                y = F.conv2d(part, layer.weight[:, c0:c0 + c], layer.bias if c0 == 0 else None, padding=1)
            out = y if out is None else out.add_(y)
            c0 += c
        return out

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        m, conv = self.m, self._conv
        x1 = F.relu_(conv(m.e_conv1, x))
        x2 = F.relu_(conv(m.e_conv2, x1))
        x3 = F.relu_(conv(m.e_conv3, x2))
        x4 = F.relu_(conv(m.e_conv4, x3))
        x5 = F.relu_(conv(m.e_conv5, x3, x4))
        x6 = F.relu_(conv(m.e_conv6, x2, x5))
        r = torch.tanh_(conv(m.e_conv7, x1, x6))
        curves = [r] * zero_dce.ITERATIONS if self.pp else r.split(3, dim=1)
        y = x.clone()
        for c in curves:  # y + c * (y*y - y), same operation order as apply_curves
            t = y * y
            y.add_(t.sub_(y).mul_(c))
        return y.clamp_(0.0, 1.0)


def _with_threads(n: int, fn):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def _mkldnn_off(fn):
    def run():
        with torch.backends.mkldnn.flags(enabled=False):
            return fn()
    return run


def matmul_fn(n: int = 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.mm(a, b)), 2.0 * n ** 3


def variants_for(kind: str, model: nn.Module, frames: np.ndarray, batch: int, alternatives: bool) -> dict:
    """{name: fn} enhancing `frames`: ours, the naive loop and (alternatives) candidate changes."""
    few = frames[:max(4, len(frames) // 4)]  # per frame, the naive loop's rate needs no full batch
    out = {f"{kind} ours": lambda: enhance_frames(model, frames, batch=batch),
           f"{kind} naive": lambda: naive_enhance(model, few)}
    if alternatives:
        fast = SplitCatInplace(model)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out.update({
            f"{kind} batch 8": lambda: enhance_frames(model, frames, batch=8),
            f"{kind} channels_last weights": lambda: enhance_frames(cl, frames, batch=batch),
            f"{kind} split-cat+in-place": lambda: enhance_frames(fast, frames, batch=batch),
            f"{kind} split-cat+in-place batch 8": lambda: enhance_frames(fast, frames, batch=8),
            f"{kind} 1 thread batch 8": _with_threads(1, lambda: enhance_frames(model, frames, batch=8)),
        })
        if kind != "zero_dce++":  # time budget: the default kind gets every alternative
            for name in (f"{kind} channels_last weights", f"{kind} split-cat+in-place batch 8"):
                del out[name]
    return out


def throughput(plan, batch: int, rounds: int, alternatives: bool) -> dict:
    """(a) and (b): per size, fps of ours vs naive (and alternatives at the first size), with a matmul."""
    mm, mm_flops = matmul_fn()
    models = {kind: load_model(kind) for kind in KINDS}
    results = {}
    for i, ((h, w), n, kinds) in enumerate(plan):
        frames = np.random.default_rng(0).integers(0, 40, size=(n, h, w, 3), dtype=np.uint8)  # dark, like ARID
        alt = alternatives and i == 0
        meta = {}
        for kind in kinds:  # warm up on a few frames: lazy init and first-call allocations out of the timings
            model = models[kind][0]
            meta[kind] = models[kind][1]
            for fn in variants_for(kind, model, frames[:4], batch, alt).values():
                fn()
            if alt:  # same pixels out? (split convs sum in another order: allow 1 level)
                a = enhance_frames(model, frames[:8], batch=batch).astype(int)
                split = enhance_frames(SplitCatInplace(model), frames[:8])
                meta[f"{kind} diff"] = {"naive": int(np.abs(a - naive_enhance(model, frames[:8])).max()),
                                        "split-cat+in-place": int(np.abs(a - split).max())}
        variants = {"matmul 2048^3 fp32": mm}
        for kind in kinds:
            variants.update(variants_for(kind, models[kind][0], frames, batch, alt))
        t0 = time.perf_counter()
        times = interleaved(variants, rounds, repeat={"matmul 2048^3 fp32": 3}, warmup=False)
        seconds = time.perf_counter() - t0
        counts = {name: n for name in times}
        counts.update({f"{k} naive": max(4, n // 4) for k in kinds})
        faults = {}
        if alt:  # why big batches are slow: fresh multi-MB temporaries are page-faulted in every call
            model = models["zero_dce++"][0]
            for b in (batch, 8):
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                enhance_frames(model, frames, batch=b)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                faults[b] = (r1.ru_minflt - r0.ru_minflt, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
        results[(h, w)] = {"n": n, "times": times, "frames": counts, "faults": faults, "meta": meta, "seconds": seconds,
                           "rounds": rounds, "mm_gflops": mm_flops / min(times["matmul 2048^3 fp32"]) / 1e9,
                           "flops": {k: enhancer_flops(models[k][0], h, w) for k in kinds}}
    return results


PASSIVE_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/benchmarks")
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
from enhance import load_model, naive_enhance
from _common import interleaved
from dlkdd.pipeline.enhancers.apply import enhance_frames
frames = np.random.default_rng(0).integers(0, 40, size=(64, 64, 64, 3), dtype=np.uint8)
m, _ = load_model("zero_dce++")
t = interleaved({"ours": lambda: enhance_frames(m, frames, batch=int(sys.argv[3])),
                 "batch 8": lambda: enhance_frames(m, frames, batch=8),
                 "naive": lambda: naive_enhance(m, frames[:16])}, int(sys.argv[4]))
print("RESULT " + json.dumps(t))
"""


def passive_wait(threads: int, batch: int, rounds: int) -> dict[str, list[float]]:
    """Zero-DCE++ 64x64 timings in a fresh process with OMP_WAIT_POLICY=PASSIVE (read at OpenMP start)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    p = subprocess.run([sys.executable, "-c", PASSIVE_CHILD, str(ROOT), str(threads), str(batch), str(rounds)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"OMP_WAIT_POLICY=PASSIVE child failed: {p.stderr.strip()[-500:]}")
    return json.loads(line[-1][len("RESULT "):])


def report_throughput(res: dict, batch: int, threads: int, passive: dict | None) -> None:
    say("\n## (a) batched enhancer vs naive per-frame loop, and (b) GFLOP/s vs matmul")
    for (h, w), r in res.items():
        t, n = r["times"], r["n"]
        say(f"\n{h}x{w}, {n} frames (naive loop: the first {max(4, n // 4)}), batch {min(batch, n)} "
            f"(enhance.batch_frames={batch}), {threads} threads, "
            f"{r['rounds']} interleaved rounds in {r['seconds']:.0f} s; "
            f"matmul 2048^3 fp32: {r['mm_gflops']:.1f} GFLOP/s (best)")
        rows = []
        for kind in KINDS:
            if f"{kind} ours" not in t:
                continue
            fl = r["flops"][kind]
            per_frame = {k: [s / r["frames"][k] for s in v] for k, v in t.items() if k in r["frames"]}
            base = per_frame[f"{kind} naive"]
            best, med = speedup(per_frame[f"{kind} ours"], base)
            for name in [k for k in per_frame if k.startswith(kind + " ")]:
                fps = 1 / min(per_frame[name])
                gf = fps * fl / 1e9
                s_best, s_med = speedup(per_frame[name], base)
                rows.append([name, f"{fps:.1f}", f"{s_best:.2f}x [{s_med:.2f}]", f"{gf:.2f}",
                             f"{gf / r['mm_gflops']:.3f}"])
            say(f"  {kind}: {r['meta'][kind]}; {fl / 1e6:.1f} MFLOP/frame")
            diff = r["meta"].get(f"{kind} diff")
            if diff:
                say(f"  {kind}: max |uint8 difference| vs ours on 8 frames: naive {diff['naive']}, "
                    f"split-cat+in-place {diff['split-cat+in-place']}")
            ours_gf = fl / min(per_frame[f"{kind} ours"]) / 1e9
            ratio = ours_gf / r["mm_gflops"]
            SUMMARY.append([f"(a) {kind} {h}x{w}: batched / naive frames/s", f"{best:.2f}x [{med:.2f}]",
                            f">= {TARGETS['a']:g}x", verdict(best, TARGETS["a"])])
            SUMMARY.append([f"(b) {kind} {h}x{w}: GFLOP/s / matmul GFLOP/s",
                            f"{ratio:.3f} ({ours_gf:.1f} / {r['mm_gflops']:.0f})",
                            f">= {TARGETS['b']:g}", verdict(ratio, TARGETS["b"])])
        say(markdown_table(["variant", "frames/s (best)", "vs naive best [median]", "GFLOP/s", "/ matmul"], rows))
        for b, (flt, user, system) in r["faults"].items():
            say(f"  zero_dce++ {n} frames at batch {b}: {flt} minor page faults ({flt * 4 / 1024:.0f} MiB "
                f"first-touched), CPU user {user:.2f} s, system {system:.2f} s")
    if passive:
        n = 64
        passive["naive"] = [s * 4 for s in passive["naive"]]  # 16 frames -> per 64
        best, med = speedup(passive["ours"], passive["naive"])
        say(f"\nfresh process with OMP_WAIT_POLICY=PASSIVE, zero_dce++ 64x64, {threads} threads: "
            f"ours {n / min(passive['ours']):.1f} frames/s, batch 8 {n / min(passive['batch 8']):.1f}, "
            f"naive {n / min(passive['naive']):.1f}; ours/naive {best:.2f}x [{med:.2f}]")


# --- (c) the clip cache vs making the clips again ----------------------------------------------

def pick_dataset(n: int, work: Path) -> tuple[Path, str]:
    """A dataset of about n videos: a spread of data/sample's (copied), else generated ones."""
    if (SAMPLE / "splits" / "train.txt").is_file():
        try:
            index = read_dataset(DataConfig(), SAMPLE)
        except (DatasetError, OSError) as e:
            say(f"data/sample not usable yet ({e}); generating videos instead")
        else:
            root = work / "sample-subset"
            train, test = index.entries("train"), index.entries("test")
            n_test = max(1, round(n * len(test) / (len(train) + len(test))))
            chosen = {"train": _spread(train, n - n_test), "test": _spread(test, n_test)}
            for split, entries in chosen.items():
                lines = []
                for i, e in enumerate(entries):
                    (root / e.rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(e.path, root / e.rel)
                    lines.append(f"{i}\t{e.label}\t{e.rel}")
                (root / "splits").mkdir(parents=True, exist_ok=True)
                (root / "splits" / f"{split}.txt").write_text("\n".join(lines) + "\n")
            (root / "classes.txt").write_text("\n".join(index.classes) + "\n")
            return root, f"data/sample ({len(chosen['train'])} train + {len(chosen['test'])} test videos of " \
                         f"{len(train) + len(test)}, copied)"
    classes = 4
    per = max(2, -(-n // classes))
    test = max(1, per // 4)
    root = _videofix().make_video_dataset(work / "generated", classes=classes, train=per - test, test=test,
                                          frames=32, h=64, w=64)
    return root, f"make_video_dataset: {classes * per} videos of 64x64, 32 frames"


def _spread(entries: list, k: int) -> list:
    if k >= len(entries):
        return list(entries)
    return [entries[i] for i in np.linspace(0, len(entries) - 1, k).round().astype(int)]


def cache_vs_video(root: Path, work: Path, rounds: int, threads: int, batch: int) -> dict:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.enhancer.kind = "zero_dce++"
    cfg.enhancer.steps = 2
    cfg.enhance.workers = 0
    cfg.enhance.batch_frames = batch
    validate(cfg)
    graph = pipeline_graph(cfg, work / "cache")
    t0 = time.perf_counter()
    execute(graph, "enhance", "cpu", Console(quiet=True))
    stage_s = time.perf_counter() - t0
    torch.set_num_threads(threads)
    index = graph.out_dir("enhance") / "index.json"
    jobs, _ = list_jobs(cfg.data, dataset_root(cfg))
    size = clip_size(cfg.data, jobs)
    args = dict(T=cfg.data.frames, clips=clips_per_split(cfg.data), size=size,
                enhancer_path=str(graph.out_dir("enhancer") / "weights.pt"),
                batch_frames=batch, device="cpu")
    counts = {}

    def read(which):
        ds = ClipDataset.from_index(index, None, which)
        n = sum(len(y) for _, y, _ in DataLoader(ds, batch_size=8, num_workers=0))
        ds.close()
        counts[which] = n

    def remake():
        counts["video"] = sum(process_videos([job], **args)[0]["original"].shape[0] for job in jobs)

    reads = 3  # a pass over the cache takes ~0.1 s: best of 3 per round, so one preemption does not decide
    times = interleaved({"cache both": lambda: read("both"), "cache enhanced": lambda: read("enhanced"),
                         "video": remake}, rounds, repeat={"cache both": reads, "cache enhanced": reads},
                        warmup=False)  # the stage just warmed all
    for name in ("cache both", "cache enhanced"):
        times[name] = [min(times[name][i:i + reads]) for i in range(0, len(times[name]), reads)]
    # the cache holds exactly what process_videos makes
    first = ClipDataset.from_index(index, None, "both")
    (orig, enh), _, _ = first[0]
    again = process_videos([jobs[0]], **args)[0]
    same = bool(np.array_equal(orig.numpy(), again["original"][0])
                and np.array_equal(enh.numpy(), again["enhanced"][0]))
    first.close()
    return {"times": times, "counts": counts, "stage_s": stage_s, "videos": len(jobs), "size": size,
            "T": cfg.data.frames, "same": same}


def report_cache(r: dict, source: str, rounds: int) -> None:
    t, c = r["times"], r["counts"]
    say("\n## (c) ClipDataset (HDF5 cache) vs decode + resize + enhance from video")
    say(f"dataset: {source}; {r['videos']} videos -> {c['video']} clips of {r['T']}x{r['size'][0]}x{r['size'][1]}; "
        f"cache built by the real enhance stage (zero_dce++, 2 fit steps, workers=0) in {r['stage_s']:.1f} s; "
        f"{rounds} interleaved rounds; cached clip == process_videos': {r['same']}")
    rows = []
    for name in ("cache both", "cache enhanced", "video"):
        rows.append([name, f"{c[name.split()[-1]] / min(t[name]):.1f}", f"{min(t[name]):.3f}"])
    say(markdown_table(["way", "clips/s (best)", "seconds (best)"], rows))
    for name in ("cache both", "cache enhanced"):
        best, med = speedup([s / c[name.split()[-1]] for s in t[name]], [s / c["video"] for s in t["video"]])
        SUMMARY.append([f"(c) ClipDataset ({name.split()[-1]}) / process_videos clips/s",
                        f"{best:.0f}x [{med:.0f}]", f">= {TARGETS['c']:g}x", verdict(best, TARGETS["c"])])


# --- (d) peak memory of the stage vs dataset size -----------------------------------------------

def make_memory_dataset(root: Path, n: int, classes: int = 4, h: int = 128, w: int = 160, frames: int = 32) -> Path:
    """n smooth dark videos (fast to encode) in ARID layout, 3/4 train and 1/4 test per class."""
    write_video = _videofix().write_video
    yy, xx = np.mgrid[0:h, 0:w]
    lines = {"train": [], "test": []}
    per = n // classes
    for k in range(classes):
        for i in range(per):
            clip = np.empty((frames, h, w, 3), np.uint8)
            for t in range(frames):
                level = 8 + 6 * np.sin((xx + (k + 2) * t + i) / 17.0) + 4 * np.cos(yy / 13.0)
                clip[t] = level.astype(np.uint8)[..., None]
                x = (5 * t * (k + 1) + i) % (w - 20)
                clip[t, 40:60, x:x + 20] = 40
            rel = f"C{k}/C{k}_{i}.mp4"
            write_video(root / rel, clip)
            split = "test" if i % 4 == 0 else "train"
            lines[split].append(f"{len(lines[split])}\t{k}\t{rel}")
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def subset(src: Path, dst: Path, keep: int, classes: int = 4) -> Path:
    """The first keep/classes videos of each class of `src`, copied, with their split lists."""
    per = keep // classes
    for split in ("train", "test"):
        rows = []
        for line in (src / "splits" / f"{split}.txt").read_text().splitlines():
            _, label, rel = line.split("\t")
            if int(rel.split("_")[-1].split(".")[0]) < per:
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, dst / rel)
                rows.append(f"{len(rows)}\t{label}\t{rel}")
        (dst / "splits").mkdir(parents=True, exist_ok=True)
        (dst / "splits" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return dst


RSS_CHILD = r"""
import json, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
import psutil
me, peaks, stop = psutil.Process(), {}, threading.Event()

def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

def watch():  # a child's own peak (VmHWM), read until it exits: dask's worker process
    while not stop.is_set():
        for c in me.children(recursive=True):
            try:
                peaks[c.pid] = max(peaks.get(c.pid, 0), hwm(c.pid))
                peaks.setdefault(f"name{c.pid}", " ".join(c.cmdline()[:3])[-60:])
            except (OSError, psutil.Error):
                pass
        time.sleep(0.05)

threading.Thread(target=watch, daemon=True).start()
from dlkdd.cli import cli
t0 = time.time()
try:
    cli.main(args=sys.argv[2:], prog_name="dlkdd", standalone_mode=False)
finally:
    stop.set()
    kids = {k: v for k, v in peaks.items() if isinstance(k, int)}
    biggest = max(kids, key=kids.get) if kids else None
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child started from a big
    # parent reports at least the parent's RSS at fork time (getrusage(2), "ru_maxrss")
    print("RESULT " + json.dumps({"self_kb": hwm("self"),
                                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                  "worker_kb": kids.get(biggest, 0), "worker": peaks.get(f"name{biggest}", ""),
                                  "seconds": time.time() - t0}))
"""


def stage_rss(data: Path, cache: Path, workers: int | None, extra: list[str]) -> dict:
    args = ["--data", str(data), "--cache", str(cache), "--device", "cpu",
            "--set", "enhancer.kind=gamma", "--set", "enhance.shard_size=16", *extra]
    if workers is not None:
        args += ["--set", f"enhance.workers={workers}"]
    p = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ROOT), *args, "enhance"],
                       capture_output=True, text=True, cwd=ROOT)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"dlkdd enhance failed (rc {p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(line[-1][len("RESULT "):])


def memory(work: Path, small: int, big: int, modes: list[int | None]) -> dict:
    t0 = time.perf_counter()
    full = make_memory_dataset(work / f"mem{big}", big)
    part = subset(full, work / f"mem{small}", small)
    gen_s = time.perf_counter() - t0
    extra = ["--set", "data.short_side=128", "--set", "data.frames=32"]
    out = {"gen_s": gen_s, "extra": extra, "runs": {}}
    for mode in modes:
        for n, root in ((small, part), (big, full)):
            out["runs"][(mode, n)] = stage_rss(root, work / f"cache-{mode}-{n}", mode, extra)
    # what keeping every clip in memory would add, for scale: original + enhanced uint8
    def clips(root: Path) -> int:  # 1 train clip, 2 test clips (data.test_clips) per video
        return sum(len((root / "splits" / f"{s}.txt").read_text().splitlines()) * k
                   for s, k in (("train", 1), ("test", 2)))
    out["clip_mb"] = {n: clips(r) * 32 * 128 * 160 * 3 * 2 / 2**20 for n, r in ((small, part), (big, full))}
    return out


def report_memory(m: dict, small: int, big: int, modes: list[int | None]) -> None:
    say(f"\n## (d) peak RSS of `dlkdd enhance` on {big} vs {small} videos (fresh process each)")
    say(f"videos: generated 128x160, 32 frames, gamma enhancer, shard_size 16, "
        f"{' '.join(m['extra'])} (so a run that kept every clip would show: all clips of {small} / {big} videos "
        f"= {m['clip_mb'][small]:.0f} / {m['clip_mb'][big]:.0f} MB); generated in {m['gen_s']:.1f} s")
    rows = []
    for mode in modes:
        label = "workers=0 (in-process)" if mode == 0 else "default (dask LocalCluster, 1 worker)"
        a, b = m["runs"][(mode, small)], m["runs"][(mode, big)]
        ratio = b["self_kb"] / a["self_kb"]
        rows.append([label, "client", f"{a['self_kb'] / 1024:.0f}", f"{b['self_kb'] / 1024:.0f}",
                     f"{ratio:.2f}", f"{a['seconds']:.1f} / {b['seconds']:.1f}"])
        SUMMARY.append([f"(d) peak RSS {big} / {small} videos, {label}, client",
                        f"{ratio:.2f} ({a['self_kb'] / 1024:.0f} -> {b['self_kb'] / 1024:.0f} MB)",
                        f"<= {TARGETS['d']:g}", verdict(ratio, TARGETS["d"], higher_is_better=False)])
        if mode != 0 and a["worker_kb"]:
            wr = b["worker_kb"] / a["worker_kb"]
            rows.append([label, "worker (VmHWM)", f"{a['worker_kb'] / 1024:.0f}", f"{b['worker_kb'] / 1024:.0f}",
                         f"{wr:.2f}", ""])
            SUMMARY.append([f"(d) peak RSS {big} / {small} videos, dask worker process",
                            f"{wr:.2f} ({a['worker_kb'] / 1024:.0f} -> {b['worker_kb'] / 1024:.0f} MB)",
                            f"<= {TARGETS['d']:g}", verdict(wr, TARGETS["d"], higher_is_better=False)])
    say(markdown_table(["mode", "process", f"{small} videos MB", f"{big} videos MB", "ratio", "seconds"], rows))


# --- (e) the stage's execution paths, per enhancer kind, and dask workers -------------------------

STAGE_KINDS = ("zero_dce", "zero_dce++", "sci", "gamma")
SCI_WEIGHTS = ROOT.parent / "shared" / "weights" / "sci" / "medium.pt"


def _kind_sets(kind: str) -> list[str]:
    """--set arguments for an enhancer of `kind`: the authors' weights when present, else a short fit."""
    path = {"zero_dce": WEIGHTS / WEIGHT_FILES["zero_dce"], "zero_dce++": WEIGHTS / WEIGHT_FILES["zero_dce++"],
            "sci": SCI_WEIGHTS}.get(kind)
    sets = [f"enhancer.kind={kind}"]
    if path is not None:
        sets += ["enhancer.mode=import", f"enhancer.weights={path}"] if path.is_file() else ["enhancer.steps=5"]
    return sets


def _cli(data: Path, cache: Path, sets: list[str], verb: str) -> tuple[float, float, str]:
    """(stage seconds as the CLI reports them, command wall seconds, output) of one fresh process."""
    args = [sys.executable, "-m", "dlkdd.cli", "--data", str(data), "--cache", str(cache), "--device", "cpu"]
    for item in sets:
        args += ["--set", item]
    t0 = time.perf_counter()
    p = subprocess.run([*args, verb], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT.parent))})
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"dlkdd {verb} failed: {(p.stdout + p.stderr).strip()[-800:]}")
    done = [line for line in (p.stdout + p.stderr).splitlines() if f"{verb}: done in" in line]
    return (float(done[-1].split("done in")[1].split()[0]) if done else wall), wall, p.stdout + p.stderr


def _stage(data: Path, work: Path, name: str, sets: list[str]) -> dict:
    """The enhance stage alone: the enhancer stage is made first, in a cache copied for each run."""
    base = work / f"enhancer-{'-'.join(sets)}".replace("/", "_")[:120]
    if not base.exists():
        _cli(data, base, sets, "enhancer")
    cache = work / f"run-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(base, cache)
    stage_s, wall_s, _ = _cli(data, cache, sets, "enhance")
    # the stage's own pace: from its first task to its last shard, torch and the enhancer loaded
    work_s = json.loads((cache / "stages" / "enhance.json").read_text())["summary"]["seconds"]
    index = json.loads((cache / "clips" / "index.json").read_text())
    frames = len(index["clips"]) * index["T"]
    digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (cache / "clips").glob("shard-*.h5"))
    shutil.rmtree(cache)
    return {"stage_s": stage_s, "work_s": work_s, "wall_s": wall_s, "frames": frames,
            "videos": len({c["video"] for c in index["clips"]}), "digests": digests}


def decode_only(data: Path, threads: int) -> dict:
    """What the stage decodes (every clip's frames, resized), nothing else, in this process."""
    cfg = Config()
    cfg.data.root = str(data)
    jobs, _ = list_jobs(cfg.data, dataset_root(cfg))
    size = clip_size(cfg.data, jobs)
    clips = clips_per_split(cfg.data)
    torch.set_num_threads(threads)
    t0, frames = time.perf_counter(), 0
    for job in jobs:
        try:
            f, _ = decode_clips(job.path, cfg.data.frames, clips[job.split], min(size), max_long_side=0)
        except VideoError:
            continue
        frames += fit_size(f, size).shape[0] * cfg.data.frames
    return {"seconds": time.perf_counter() - t0, "frames": frames, "videos": len(jobs)}


def stage_paths(work: Path, big_per_class: int, threads: int) -> dict:
    out = {"load_start": os.getloadavg()[0]}
    dec = decode_only(SAMPLE, threads)
    out["decode"] = dec
    # (e1) default path (a LocalCluster, threads_per_worker at its default) vs in-process, same config
    sets = _kind_sets("sci")
    out["default"] = _stage(SAMPLE, work, "default", sets)
    out["inprocess"] = _stage(SAMPLE, work, "inprocess", [*sets, "enhance.workers=0"])
    # the default path with its LocalCluster forced at once (enhance.cluster_after=0): what dask costs
    out["forced"] = _stage(SAMPLE, work, "forced", [*sets, "enhance.cluster_after=0"])
    # (e2) each enhancer kind, in-process, one torch thread (what one core of a CPU node gives)
    out["kinds"] = {kind: _stage(SAMPLE, work, f"kind-{kind}", [*_kind_sets(kind), "enhance.workers=0",
                                                                   f"enhance.threads_per_worker={threads}"])
                    for kind in STAGE_KINDS}
    # (e3) 1 vs 2 dask workers, one thread each, on a generated set large enough to amortise start-up
    big = work / "big"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlkdd.cli", "sample", str(big), "--seed", "1",
                    "--videos-per-class", str(big_per_class), "--test-per-class", str(max(1, big_per_class // 4))],
                   check=True, capture_output=True, cwd=ROOT)
    out["big_gen_s"] = time.perf_counter() - t0
    out["workers"] = {w: _stage(big, work, f"workers-{w}", [*sets, f"enhance.workers={w}",
                                                            "enhance.threads_per_worker=1"]) for w in (1, 2)}
    out["load_end"] = os.getloadavg()[0]
    return out


def report_stage_paths(r: dict, threads: int) -> None:
    dec = r["decode"]
    dec_fps = dec["frames"] / dec["seconds"]
    say(f"\n## (e) the enhance stage: paths, kinds, workers (load average {r['load_start']:.1f} at start, "
        f"{r['load_end']:.1f} at end; each run a fresh `dlkdd enhance` process)")
    say(f"decode-only (decode_clips + resize of every clip, {threads} thread): {dec['videos']} videos, "
        f"{dec['frames']} frames in {dec['seconds']:.2f} s = {dec_fps:.0f} frames/s")
    a, b, f = r["default"], r["inprocess"], r["forced"]
    ratio = a["stage_s"] / b["stage_s"]
    same = a["digests"] == b["digests"] == f["digests"]
    say(markdown_table(["path (sci, sample)", "stage s", "command wall s", "frames/s"],
                       [["default (enhance.workers=1: a LocalCluster if the work left outlasts "
                         "enhance.cluster_after)", f"{a['stage_s']:.1f}", f"{a['wall_s']:.1f}",
                         f"{a['frames'] / a['stage_s']:.0f}"],
                        ["in-process (enhance.workers=0)", f"{b['stage_s']:.1f}", f"{b['wall_s']:.1f}",
                         f"{b['frames'] / b['stage_s']:.0f}"],
                        ["LocalCluster at once (enhance.cluster_after=0)", f"{f['stage_s']:.1f}",
                         f"{f['wall_s']:.1f}", f"{f['frames'] / f['stage_s']:.0f}"]]))
    say(f"default / in-process: stage {ratio:.2f}x, command wall {a['wall_s'] / b['wall_s']:.2f}x; "
        f"cluster at once / in-process: stage {f['stage_s'] / b['stage_s']:.2f}x; "
        f"shards byte-identical (all three): {same}")
    SUMMARY.append(["(e) default path / in-process, enhance stage seconds (sci, sample)", f"{ratio:.2f}",
                    "<= 1.2", verdict(ratio, 1.2, higher_is_better=False)])
    rows = []
    for kind, k in r["kinds"].items():
        fps, work_fps = k["frames"] / k["stage_s"], k["frames"] / k["work_s"]
        rows.append([kind, f"{k['stage_s']:.1f}", f"{fps:.0f}", f"{fps / dec_fps:.2f}", f"{k['work_s']:.1f}",
                     f"{work_fps:.0f}", f"{work_fps / dec_fps:.2f}"])
        if kind == "sci":
            SUMMARY.append(["(e) sci enhance stage frames/s / decode-only (in-process; the stage's pace, "
                            "after torch and the enhancer load)", f"{work_fps / dec_fps:.2f}",
                            ">= 0.5", verdict(work_fps / dec_fps, 0.5)])
            SUMMARY.append(["(e) the same, the whole stage (torch import and enhancer load included)",
                            f"{fps / dec_fps:.2f}", "", ""])
    say(markdown_table([f"kind (in-process, {threads} torch thread)", "stage s", "frames/s", "/ decode-only",
                        "work s", "work frames/s", "/ decode-only"], rows))
    w1, w2 = r["workers"][1], r["workers"][2]
    speed = w1["stage_s"] / w2["stage_s"]
    say(f"generated set: {w1['videos']} videos (generated in {r['big_gen_s']:.0f} s); sci, threads_per_worker=1: "
        f"1 worker {w1['stage_s']:.1f} s, 2 workers {w2['stage_s']:.1f} s -> {speed:.2f}x "
        f"(the stage's pace after loading: {w1['work_s']:.1f} s vs {w2['work_s']:.1f} s); "
        f"shards byte-identical: {w1['digests'] == w2['digests']}")
    SUMMARY.append(["(e) 2 dask workers / 1, one thread each, stage speed", f"{speed:.2f}x", ">= 1.6x",
                    verdict(speed, 1.6)])


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16, help="videos for (c) (a spread of data/sample, or generated)")
    ap.add_argument("--quick", action="store_true", help="64x64 only, fewer rounds and videos (under a minute)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every measurement")
    ap.add_argument("--stage", action="store_true", help="only (e): the stage's paths, kinds and workers")
    ap.add_argument("--big-per-class", type=int, default=200, help="(e) generated set: videos per class (6 classes)")
    ap.add_argument("--workers-only", metavar="DATASET", type=Path,
                    help="only (e3): 1 vs 2 dask workers on an existing dataset (e.g. one made by "
                         "`dlkdd sample DIR --seed 1 --videos-per-class 800 --test-per-class 200`)")
    args = ap.parse_args(argv)
    if args.workers_only:
        started = time.perf_counter()
        cmd = f"python benchmarks/enhance.py --workers-only {args.workers_only}"
        say(f"# enhance benchmark: {cmd}")
        with tempfile.TemporaryDirectory(prefix="dlkdd-bench-workers-") as tmp:
            load = os.getloadavg()[0]
            sets = [*_kind_sets("sci"), "enhance.threads_per_worker=1"]
            w = {n: _stage(args.workers_only, Path(tmp), f"workers-{n}", [*sets, f"enhance.workers={n}"])
                 for n in (1, 2)}
        speed = w[1]["stage_s"] / w[2]["stage_s"]
        say(f"{w[1]['videos']} videos, {w[1]['frames']} frames; sci, threads_per_worker=1 (load average "
            f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end): 1 worker {w[1]['stage_s']:.1f} s, "
            f"2 workers {w[2]['stage_s']:.1f} s -> {speed:.2f}x (the stage's pace after loading: "
            f"{w[1]['work_s']:.1f} s vs {w[2]['work_s']:.1f} s = {w[1]['work_s'] / w[2]['work_s']:.2f}x); "
            f"shards byte-identical: {w[1]['digests'] == w[2]['digests']}")
        SUMMARY.append(["(e) 2 dask workers / 1, one thread each, stage speed", f"{speed:.2f}x", ">= 1.6x",
                        verdict(speed, 1.6)])
        say(markdown_table(["measure", "value", "target", "verdict"], SUMMARY))
        say(f"\ncommand: `{cmd}` -- {time.perf_counter() - started:.0f} s in all")
        return
    if args.stage:
        started = time.perf_counter()
        cmd = f"python benchmarks/enhance.py --stage --big-per-class {args.big_per_class}"
        say(f"# enhance benchmark: {cmd}")
        with tempfile.TemporaryDirectory(prefix="dlkdd-bench-stage-") as tmp:
            report_stage_paths(stage_paths(Path(tmp), args.big_per_class, 1), 1)
        say(markdown_table(["measure", "value", "target", "verdict"], SUMMARY))
        say(f"\ncommand: `{cmd}` -- {time.perf_counter() - started:.0f} s in all")
        return
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    batch = CPU_BATCH_FRAMES  # enhance.batch_frames = auto on a CPU
    quick = args.quick
    cmd = "python benchmarks/enhance.py" + (" --quick" if quick else "") + \
        (f" --videos {args.videos}" if args.videos != 16 else "")
    say(f"# enhance benchmark: {cmd}")
    say(f"torch {torch.__version__}, {args.threads} threads, mkldnn {torch.backends.mkldnn.is_available()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    # (size, frames, kinds): Zero-DCE at 240x320 (12 GFLOP a frame) would take most of the time budget
    plan = [((64, 64), 64, ("zero_dce++",))] if quick else \
        [((64, 64), 64, KINDS), ((112, 112), 32, KINDS), ((240, 320), 8, ("zero_dce++",))]
    res = throughput(plan, batch, rounds=2, alternatives=not quick)
    passive = None if quick else passive_wait(args.threads, batch, rounds=1)
    report_throughput(res, batch, args.threads, passive)

    with tempfile.TemporaryDirectory(prefix="dlkdd-bench-enhance-") as tmp:
        work = Path(tmp)
        n_videos = min(args.videos, 8) if quick else args.videos
        root, source = pick_dataset(n_videos, work)
        rounds = 2
        report_cache(cache_vs_video(root, work, rounds, args.threads, batch), source, rounds)

        small, big = (8, 32) if quick else (16, 64)
        modes = [0] if quick else [0, None]
        report_memory(memory(work, small, big, modes), small, big, modes)

    total = time.perf_counter() - started
    say(f"\n## summary (best round [median of per-round ratios]); load average now {os.getloadavg()[0]:.2f}")
    say(markdown_table(["measure", "value", "target", "verdict"], SUMMARY))
    say(f"\ncommand: `{cmd}` -- {total:.0f} s in all")


if __name__ == "__main__":
    main()
