"""What the enhance stage will do: the videos (jobs) of the dataset, the clip size, the tasks
(several videos decoded and enhanced together), whether the disk can hold the result; and the
errors the stage stops with.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ....errors import StageError
from ...datasets.decode import VideoError, probe, resize_shape
from ...datasets.shard_parts import Job
from ...datasets.splits import read_dataset
from ...engine.ranks import machine_cores

TASK_FRAMES = 256  # frames decoded per task (several videos, enhanced together) ...
TASK_BYTES = 32 << 20  # ... and at most this many bytes of them: bounds memory per task in flight


class EnhanceError(StageError):
    """The enhance stage cannot go on (one line)."""


class ClusterLost(EnhanceError):
    """The dask scheduler, or every worker it had, is gone (one line naming the scheduler)."""


def cluster_workers(enhance, cores: int | None = None) -> int:
    """`enhance.workers` as a number: 0 = this process only, N = a LocalCluster of N workers.

    auto: the workers the cores hold beside this process, which writes every shard, at
    `threads_per_worker` each, at most 8; 0 when that is fewer than two. In this process the next
    task decodes while the present one is enhanced, so it already keeps `threads_per_worker` + 1
    cores busy: one worker does the same work serially and adds its start-up, the transfer of
    every clip and a process that idles while it works (measured on the sample: see
    benchmarks/RESULTS.md, `enhance_paths.py`).
    """
    if enhance.workers != "auto":
        return int(enhance.workers)
    n = min(8, ((cores or machine_cores()) - 1) // enhance.threads_per_worker)
    return n if n >= 2 else 0


def list_jobs(data, root: Path) -> tuple[list[Job], list[str]]:
    """Every video of the dataset under `root` (train, then validation, then test) and the class names."""
    index = read_dataset(data, root)
    jobs = [Job(i, e.path, e.rel, e.split, e.label)
            for i, e in enumerate([*index.entries("train"), *index.entries("val"), *index.entries("test")])]
    return jobs, list(index.classes)


def missing_errors(index) -> list[dict]:
    """The listed videos of a dataset index that are not on disk (skipped with --skip-missing),
    reported like unreadable ones."""
    return [{"video": e.rel, "path": e.path, "split": e.split,
             "reason": f"{e.source}:{e.line}: video not found: {e.path}"}
            for e in index.missing]


def clips_per_split(data) -> dict[str, int]:
    # validation is scored like test; all splits share sample_indices' offset rule
    return {"train": data.clips_per_video, "val": data.test_clips, "test": data.test_clips}


def clip_size(data, jobs: list[Job]) -> tuple[int, int]:
    """(H, W) of every cached clip: the first readable video's frame size, short side resized."""
    for job in jobs:
        try:
            _, h, w, _ = probe(job.path)
        except VideoError:
            continue
        return tuple(resize_shape(h, w, data.short_side, data.max_long_side))
    return (data.short_side, data.short_side)


def task_plan(jobs: list[Job], T: int, clips: dict, size: tuple[int, int]) -> list[list[Job]]:
    """Consecutive videos grouped into tasks of at most TASK_FRAMES frames and TASK_BYTES bytes."""
    frame_bytes = size[0] * size[1] * 3 * 2  # original + enhanced
    budget = max(1, min(TASK_FRAMES, TASK_BYTES // frame_bytes))
    tasks, current, frames = [], [], 0
    for job in jobs:
        n = clips[job.split] * T
        if current and frames + n > budget:
            tasks.append(current)
            current, frames = [], 0
        current.append(job)
        frames += n
    return tasks + ([current] if current else [])


def check_free_space(cache: Path, n_clips: int, T: int, size: tuple[int, int]) -> None:
    need = int(n_clips * T * size[0] * size[1] * 3 * 2 * 1.05)  # original + enhanced, uncompressed
    free = shutil.disk_usage(cache).free
    if free < need:
        raise EnhanceError(f"{cache}: not enough free space for the clip cache: need about "
                           f"{need / 1e9:.2f} GB, {free / 1e9:.2f} GB free")
