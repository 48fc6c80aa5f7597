"""The enhance stage's work function: every video -> T-frame clips, original and enhanced, in HDF5
shards, with index.json and errors.json; what `enhance` and `pretrain` (its footage) both call.

Videos are decoded and enhanced in tasks of several videos (their frames share enhancer
batches), in this process or in parallel (dask: a LocalCluster, or an existing
scheduler); this process writes each shard as soon as all its videos are done,
to `*.tmp`, flushed and renamed, followed by a small `parts/shard-NNNNN.json`
that marks the shard finished. A rerun after an interruption keeps finished
shards (their part file names the stage fingerprint they were made under) and
does only the missing ones, so it ends with the same shards as an uninterrupted
run. Memory stays bounded: at most one shard plus a window of in-flight videos.
Torch and dask load on first use (a cluster started at once starts before this process loads torch).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...datasets.shard_parts import ShardWriter, part_is_done, read_parts, remove_stale_shards, shard_plan, write_index
from ...datasets.splits import read_dataset
from ...engine.progress import progress_bar
from ...names import CLIP_ERRORS
from .local import run_here, until_cluster_pays
from .plan import (
    ClusterLost,
    EnhanceError,
    check_free_space,
    clip_size,
    clips_per_split,
    cluster_workers,
    list_jobs,
    missing_errors,
    task_plan,
)
from .task import load_enhancer_once


def make_clips(data, enhance, root: Path, out: Path, enhancer_file: Path, fingerprint: str, device: str,
               console, options: dict) -> dict:
    """The clip cache of the dataset under `root` in `out`: `data` and `enhance` are the config
    sections, `enhancer_file` the enhancer applied, `fingerprint` what finished shards must have
    been made under to be kept, `options` the verb's (scheduler, strict). Returns the summary."""
    (out / "parts").mkdir(parents=True, exist_ok=True)
    jobs, classes = list_jobs(data, root)
    if not jobs:
        raise EnhanceError(f"{root}: the split lists name no videos")
    size, T, clips = clip_size(data, jobs), data.frames, clips_per_split(data)
    cpv = max(clips.values())
    plan = shard_plan(jobs, enhance.shard_size, cpv)
    done = {i for i in range(len(plan)) if part_is_done(out, i, fingerprint)}
    remove_stale_shards(out, keep=done, total=len(plan))
    todo = [i for i in range(len(plan)) if i not in done]
    videos = sum(len(plan[i]) for i in todo)
    check_free_space(out, videos * cpv, T, size)
    if done:
        console.print(f"  keeping {len(done)} finished shard(s) of {len(plan)}; enhancing the other {len(todo)}")
    scheduler = options.get("scheduler") or enhance.scheduler
    workers = cluster_workers(enhance)  # auto: how many the cores hold, 0 (this process) below two
    if todo and not scheduler and (workers == 0 or enhance.cluster_after > 0):
        # this process enhances the first tasks before any cluster starts: torch and the enhancer
        # load now, so the summary's seconds and videos_per_s are the pace of the work. (A cluster
        # started at once, cluster_after = 0, starts first and this process loads them meanwhile.)
        load_enhancer_once(str(enhancer_file), device)
    t0 = time.time()
    args = dict(T=T, clips=clips, size=size, enhancer_path=str(enhancer_file),
                batch_frames=enhance.batch_frames, precision=enhance.precision, device=device)
    tasks = task_plan([j for i in todo for j in plan[i]], T, clips, size)
    writer = ShardWriter(out, plan, fingerprint, enhance.compression)
    strict = options.get("strict") or enhance.strict
    try:
        with progress_bar(console, "  enhance", videos, "videos") as update:
            for n, result in enumerate(_results(tasks, args, enhance, workers, scheduler), 1):
                if "error" in result and strict:
                    raise EnhanceError(f"{result['error']} (--strict)")
                writer.add(result)
                update(n)
    except KeyboardInterrupt:
        console.print(f"  enhance interrupted: {len(done) + writer.written} of {len(plan)} shard(s) "
                      f"finished and kept; the rerun enhances only the others")
        raise
    except ClusterLost as e:
        raise ClusterLost(f"{e}; {len(done) + writer.written} of {len(plan)} shard(s) finished and kept; "
                          f"run the same command again to resume") from None
    seconds = time.time() - t0
    return _finish(out, root, data, plan, classes, size, console, videos / max(seconds, 1e-6), seconds)


def _results(tasks: list[list], args: dict, enhance, workers: int, scheduler: str):
    """Yield one result per video: in-process (`workers` = 0), or on a dask cluster.

    Without a scheduler to connect to, this process first works through the tasks itself and
    starts a LocalCluster only once the work left, at the pace measured so far, would take
    longer than `enhance.cluster_after` seconds (about what starting one costs), so a dataset
    with less work than that never starts one. The cluster starts in the background while this process goes on;
    once its workers are up (torch imported, the enhancer loaded) the remaining tasks go to them.
    """
    if not tasks:
        return
    it, threads = iter(tasks), enhance.threads_per_worker
    if workers == 0 and not scheduler:
        yield from run_here(it, args, threads)
        return
    if not scheduler and enhance.cluster_after > 0:
        worth_it = yield from until_cluster_pays(it, len(tasks), args, threads, enhance.cluster_after)
        if not worth_it:
            return
    from .cluster import run_on_cluster  # deferred: dask takes a second or two to import; small sets never need it
    yield from run_on_cluster(it, workers, scheduler, args, threads)


def _finish(out: Path, root: Path, data, plan: list[list], classes: list[str], size: tuple[int, int], console,
            rate: float, seconds: float) -> dict:
    """Assemble index.json and errors.json from the part files; print the summary."""
    clips, errors = read_parts(out, len(plan))
    index = read_dataset(data, root)  # once more, after the work: what was missing, how validation split
    errors = missing_errors(index) + errors
    if not clips:
        first = errors[0]["reason"] if errors else "no videos"
        raise EnhanceError(f"no video could be read ({len(errors)} failed; first: {first})")
    groups = index.groups
    write_index(out, clips, errors, classes, data.frames, size, groups)
    nbytes = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    before = float(np.mean([c["mean_original"] for c in clips]))
    after = float(np.mean([c["mean_enhanced"] for c in clips]))
    videos = len({c["video"] for c in clips})
    summary = {"clips": len(clips), "videos": videos, "failed": len(errors), "gb": round(nbytes / 1e9, 4),
               "mean_brightness_before": round(before, 4), "mean_brightness_after": round(after, 4),
               "clip_shape": [data.frames, *size, 3], "shards": len(plan),
               "seconds": round(seconds, 2), "videos_per_s": round(rate, 2)}
    console.print(f"  {len(clips)} clips from {videos} videos in {len(plan)} shard(s), "
                  f"{nbytes / 1e9:.3f} GB; mean brightness {before:.3f} -> {after:.3f}; "
                  f"{len(errors)} failed" + (f" (listed in {out / CLIP_ERRORS})" if errors else ""))
    if groups.get("val", {}).get("videos"):
        t, v = groups["train"], groups["val"]
        console.print(f"  validation: {v['videos']} videos in {v['groups']} groups held out of the train list; "
                      f"train keeps {t['videos']} videos in {t['groups']} groups (data.val_group)")
    summary["validation_groups"] = groups
    for e in errors[:5]:
        console.print(f"  [red]failed[/] {root / e['reason']}", highlight=False)
    if len(errors) > 5:
        console.print(f"  ... and {len(errors) - 5} more in {CLIP_ERRORS}")
    return summary
