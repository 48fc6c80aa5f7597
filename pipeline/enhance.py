"""The `enhance` stage: every video -> T-frame clips, original and enhanced, in HDF5 shards.

Videos are decoded and enhanced in parallel (dask: a LocalCluster, or an existing
scheduler); this process writes each shard as soon as all its videos are done,
to `*.tmp`, flushed and renamed, followed by a small `parts/shard-NNNNN.json`
that marks the shard finished. A rerun after an interruption keeps finished
shards (their part file names the stage fingerprint they were made under) and
does only the missing ones, so it ends with the same shards as an uninterrupted
run. Memory stays bounded: at most one shard plus a window of in-flight videos.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .progress import progress_bar
from ..errors import StageError
from .digest import file_digest
from .videos import dataset_root

ENHANCER_FILE = "weights.pt"


class EnhanceError(StageError):
    """The enhance stage cannot go on (one line)."""


@dataclass(frozen=True)
class Job:
    """One video to turn into clips."""
    vid: int  # position in the dataset's video order (train then test)
    path: str
    rel: str
    split: str
    label: int


# --- work done on a dask worker (or in-process) -------------------------------------------

_ENHANCERS: dict[str, object] = {}


def _enhancer(path: str, device: str):
    key = f"{path}:{os.stat(path).st_mtime_ns}:{device}"
    if key not in _ENHANCERS:
        from .enhancer import load_enhancer
        _ENHANCERS.clear()
        _ENHANCERS[key] = load_enhancer(path).to(device)
    return _ENHANCERS[key]


def process_video(job: Job, T: int, clips: dict, size: tuple[int, int], enhancer_path: str,
                  batch_frames: int, threads: int, device: str) -> dict:
    """Decode, sample, resize and enhance one video. Failures come back as {"error": reason}."""
    import torch
    from .enhancer import enhance_frames
    from .videos import VideoError, decode_clips
    from .views import fit_size
    try:
        frames, indices = decode_clips(job.path, T, clips[job.split], min(size), max_long_side=0)
    except VideoError as e:
        return {"job": job, "error": str(e)}
    # In-process (workers = 0) the thread count must not outlive the video: training later in the
    # same run would otherwise use it, and its float sums (so its weights) depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frames = fit_size(frames, size)
        flat = frames.reshape(-1, *frames.shape[2:])
        # clips of one video share frames (and short videos repeat them): enhance each once
        _, first, inverse = np.unique(indices.ravel(), return_index=True, return_inverse=True)
        enhanced = enhance_frames(_enhancer(enhancer_path, device), flat[first], batch=batch_frames,
                                  device=device)[inverse.ravel()].reshape(frames.shape)
    finally:
        torch.set_num_threads(before)
    return {"job": job, "original": frames, "enhanced": enhanced, "indices": indices,
            "size": os.stat(job.path).st_size}


# --- planning ------------------------------------------------------------------------------

def list_jobs(cfg) -> tuple[list[Job], list[str]]:
    from .videos import read_dataset
    index = read_dataset(cfg.data, dataset_root(cfg))
    jobs = [Job(i, e.path, e.rel, e.split, e.label)
            for i, e in enumerate([*index.entries("train"), *index.entries("test")])]
    return jobs, list(index.classes)


def clip_size(cfg, jobs: list[Job]) -> tuple[int, int]:
    """(H, W) of every cached clip: the first readable video's frame size, short side resized."""
    from .videos import VideoError, probe, resize_shape
    for job in jobs:
        try:
            _, h, w, _ = probe(job.path)
        except VideoError:
            continue
        return tuple(resize_shape(h, w, cfg.data.short_side, cfg.data.max_long_side))
    return (cfg.data.short_side, cfg.data.short_side)


def shard_plan(jobs: list[Job], shard_size: int, clips_per_video: int) -> list[list[Job]]:
    per = max(1, shard_size // clips_per_video)
    return [jobs[i:i + per] for i in range(0, len(jobs), per)]


def check_free_space(cache: Path, n_clips: int, T: int, size: tuple[int, int]) -> None:
    need = int(n_clips * T * size[0] * size[1] * 3 * 2 * 1.05)  # original + enhanced, uncompressed
    free = shutil.disk_usage(cache).free
    if free < need:
        raise EnhanceError(f"{cache}: not enough free space for the clip cache: need about "
                           f"{need / 1e9:.2f} GB, {free / 1e9:.2f} GB free")


# --- the stage ----------------------------------------------------------------------------

def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    out = ctx.out
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    fingerprint = ctx.graph.inspect(ctx.name).fingerprint
    jobs, classes = list_jobs(cfg)
    if not jobs:
        raise EnhanceError(f"{dataset_root(cfg)}: the split lists name no videos")
    size = clip_size(cfg, jobs)
    T = cfg.data.frames
    clips = {"train": cfg.data.clips_per_video, "test": cfg.data.test_clips}
    cpv = max(clips.values())
    plan = shard_plan(jobs, cfg.enhance.shard_size, cpv)
    done = {i for i in range(len(plan)) if _part_is_done(out, i, fingerprint)}
    _remove_stale_shards(out, keep=done, total=len(plan))
    todo = [i for i in range(len(plan)) if i not in done]
    check_free_space(out, sum(len(plan[i]) for i in todo) * cpv, T, size)
    if done:
        ctx.console.print(f"  keeping {len(done)} finished shard(s) of {len(plan)}; "
                          f"enhancing the other {len(todo)}")
    enhancer_path = str(ctx.dir_of("enhancer") / ENHANCER_FILE)
    t0 = time.time()
    args = dict(T=T, clips=clips, size=size, enhancer_path=enhancer_path,
                batch_frames=cfg.enhance.batch_frames, threads=cfg.enhance.threads_per_worker,
                device=ctx.device)
    writer = ShardWriter(out, plan, fingerprint, cfg.enhance.compression, ctx.options.get("strict")
                         or cfg.enhance.strict)
    try:
        with progress_bar(ctx.console, "  enhance", sum(len(plan[i]) for i in todo), "videos") as update:
            for n, result in enumerate(_map(ctx, [j for i in todo for j in plan[i]], args), 1):
                writer.add(result)
                update(n)
    except KeyboardInterrupt:
        ctx.console.print(f"  enhance interrupted: {len(done) + writer.written} of {len(plan)} shard(s) "
                          f"finished and kept; the rerun enhances only the others")
        raise
    return finish(ctx, plan, classes, size, time.time() - t0, todo)


def _part_path(out: Path, i: int) -> Path:
    return out / "parts" / f"shard-{i:05d}.json"


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def _part_is_done(out: Path, i: int, fingerprint: str) -> bool:
    """Shard i was finished under this fingerprint and is still byte for byte what was written."""
    try:
        part = json.loads(_part_path(out, i).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if part.get("fingerprint") != fingerprint or not isinstance(part.get("rows"), list):
        return False
    if not part["rows"]:
        return True
    shard = out / _shard_name(i)
    # A shard damaged since (bit rot, a stray write) is redone, never kept: size, then content.
    return (shard.exists() and shard.stat().st_size == part.get("size")
            and file_digest(shard, checksum=True) == part.get("sha256"))


def _remove_stale_shards(out: Path, keep: set[int], total: int) -> None:
    """Shards from another configuration (or beyond the plan) must not be mistaken for ours."""
    for p in [*out.glob("shard-*.h5"), *(out / "parts").glob("shard-*.json"), *out.glob("*.tmp"),
              *(out / "parts").glob("*.tmp")]:
        try:
            i = int(p.name.split("-")[1].split(".")[0])
        except (IndexError, ValueError):
            i = -1
        if i not in keep or i >= total or p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


class ShardWriter:
    """Collects finished videos and writes each shard (then its part file) once it is complete."""

    def __init__(self, out: Path, plan: list[list[Job]], fingerprint: str, compression: str, strict: bool):
        self.out, self.plan, self.fingerprint = out, plan, fingerprint
        self.compression, self.strict = compression, strict
        self.written = 0  # shards finished by this run
        self.shard_of = {job.vid: i for i, jobs in enumerate(plan) for job in jobs}
        self.pending: dict[int, dict[int, dict]] = {}

    def add(self, result: dict) -> None:
        job = result["job"]
        if "error" in result and self.strict:
            raise EnhanceError(f"{result['error']} (--strict)")
        i = self.shard_of[job.vid]
        bucket = self.pending.setdefault(i, {})
        bucket[job.vid] = result
        if len(bucket) == len(self.plan[i]):
            self.write(i, [bucket[j.vid] for j in self.plan[i]])
            del self.pending[i]

    def write(self, i: int, results: list[dict]) -> None:
        from .shards import write_shard
        ok = [r for r in results if "error" not in r]
        rows, errors = [], []
        for r in results:
            job = r["job"]
            if "error" in r:
                # named relative to the dataset root, as everything in the cache: a moved dataset
                # (or cache) leaves errors.json, and so every downstream stage, unchanged
                reason = r["error"]
                if reason.startswith(job.path):
                    reason = job.rel + reason[len(job.path):]
                errors.append({"video": job.rel, "path": job.rel, "split": job.split, "reason": reason})
                continue
            for c in range(r["original"].shape[0]):
                rows.append({"video": job.rel, "split": job.split, "label": job.label, "clip": c,
                             "frames": r["indices"][c].tolist(), "source_size": r["size"],
                             "mean_original": round(float(r["original"][c].mean()) / 255, 5),
                             "mean_enhanced": round(float(r["enhanced"][c].mean()) / 255, 5)})
        part = {"fingerprint": self.fingerprint, "rows": rows, "errors": errors}
        if ok:
            original = np.concatenate([r["original"] for r in ok])
            enhanced = np.concatenate([r["enhanced"] for r in ok])
            path = write_shard(self.out / _shard_name(i), original, enhanced,
                               np.array([row["label"] for row in rows], dtype=np.int64),
                               [row["video"] for row in rows],
                               np.array([row["frames"] for row in rows], dtype=np.int32),
                               compression=self.compression)
            part.update(size=path.stat().st_size, sha256=file_digest(path, checksum=True))
        atomic.write_json(_part_path(self.out, i), part)  # after the shard: the part file marks it whole
        self.written += 1


def _map(ctx, jobs: list[Job], args: dict):
    """Yield process_video results, in-process (workers = 0) or on a dask cluster."""
    if not jobs:
        return
    scheduler = ctx.options.get("scheduler") or ctx.cfg.enhance.scheduler
    if ctx.cfg.enhance.workers == 0 and not scheduler:
        for job in jobs:
            yield process_video(job, **args)
        return
    from distributed import Client, LocalCluster, as_completed
    # distributed logs at INFO on its own (and tracebacks of closed comms at INFO when a run is
    # interrupted): noise under our own messages, so WARNING while we use it.
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        # passive OpenMP waits: spinning threads starve each other on a busy machine (measured)
        cluster = LocalCluster(n_workers=ctx.cfg.enhance.workers, threads_per_worker=1,
                               processes=True, dashboard_address=None, silence_logs=40,
                               env={"OMP_WAIT_POLICY": "PASSIVE"})
        client = Client(cluster)
    try:
        window = max(4, 4 * sum(client.nthreads().values()))  # bounded: memory does not grow with N
        it = iter(jobs)
        futures = as_completed([client.submit(process_video, j, pure=False, **args)
                                for j in _take(it, window)])
        for fut in futures:
            yield fut.result()
            fut.release()
            for j in _take(it, 1):
                futures.add(client.submit(process_video, j, pure=False, **args))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        log.setLevel(level)


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def finish(ctx, plan, classes, size, seconds, todo) -> dict:
    """Assemble index.json and errors.json from the part files; print the summary."""
    out = ctx.out
    clips, errors = [], []
    for i in range(len(plan)):
        part = json.loads(_part_path(out, i).read_text())
        for row, item in enumerate(part["rows"]):
            clips.append({"id": len(clips), "shard": _shard_name(i), "row": row, **item})
        errors += part["errors"]
    if not clips:
        first = errors[0]["reason"] if errors else "no videos"
        raise EnhanceError(f"no video could be read ({len(errors)} failed; first: {first})")
    cfg = ctx.cfg
    index = {"format_version": 1, "classes": classes, "T": cfg.data.frames, "H": size[0], "W": size[1],
             "clips": clips}  # videos relative to the dataset root, which may move
    atomic.write_json(out / "index.json", index)
    atomic.write_json(out / "errors.json", errors)
    nbytes = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    before = float(np.mean([c["mean_original"] for c in clips]))
    after = float(np.mean([c["mean_enhanced"] for c in clips]))
    videos = len({c["video"] for c in clips})
    rate = sum(len(plan[i]) for i in todo) / max(seconds, 1e-6)
    summary = {"clips": len(clips), "videos": videos, "failed": len(errors), "gb": round(nbytes / 1e9, 4),
               "mean_brightness_before": round(before, 4), "mean_brightness_after": round(after, 4),
               "clip_shape": [cfg.data.frames, *size, 3], "shards": len(plan),
               "seconds": round(seconds, 2), "videos_per_s": round(rate, 2)}
    ctx.console.print(f"  {len(clips)} clips from {videos} videos in {len(plan)} shard(s), "
                      f"{nbytes / 1e9:.3f} GB; mean brightness {before:.3f} -> {after:.3f}; "
                      f"{len(errors)} failed" + (f" (listed in {out / 'errors.json'})" if errors else ""))
    for e in errors[:5]:
        ctx.console.print(f"  [red]failed[/] {dataset_root(cfg) / e['reason']}", highlight=False)
    if len(errors) > 5:
        ctx.console.print(f"  ... and {len(errors) - 5} more in errors.json")
    return summary
