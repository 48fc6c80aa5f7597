"""The `enhance` stage: every video -> T-frame clips, original and enhanced, in HDF5 shards.

Videos are decoded and enhanced in tasks of several videos (their frames share enhancer
batches), in this process or in parallel (dask: a LocalCluster, or an existing
scheduler); this process writes each shard as soon as all its videos are done,
to `*.tmp`, flushed and renamed, followed by a small `parts/shard-NNNNN.json`
that marks the shard finished. A rerun after an interruption keeps finished
shards (their part file names the stage fingerprint they were made under) and
does only the missing ones, so it ends with the same shards as an uninterrupted
run. Memory stays bounded: at most one shard plus a window of in-flight videos.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import StageError
from ..datasets.videos import dataset_root
from ..engine import atomic
from ..engine.digest import file_digest
from ..engine.progress import progress_bar
from ..names import CLIP_ERRORS, CLIP_INDEX, ENHANCER_FILE


class EnhanceError(StageError):
    """The enhance stage cannot go on (one line)."""


class ClusterLost(EnhanceError):
    """The dask scheduler, or every worker it had, is gone (one line naming the scheduler)."""


# A worker that dies is replaced (LocalCluster's nanny) and dask reruns its tasks elsewhere;
# a cluster left with no worker at all for this long is given up on instead of waited on forever.
NO_WORKERS_PATIENCE = 30.0


@dataclass(frozen=True)
class Job:
    """One video to turn into clips."""
    vid: int  # position in the dataset's video order (train, then validation, then test)
    path: str
    rel: str
    split: str
    label: int


# --- work done on a dask worker (or in-process) -------------------------------------------

_ENHANCERS: dict[str, object] = {}
TASK_FRAMES = 256  # frames decoded per task (several videos, enhanced together) ...
TASK_BYTES = 32 << 20  # ... and at most this many bytes of them: bounds memory per task in flight


def _enhancer(path: str, device: str):
    """One enhancer per process (a dask worker keeps it across tasks), reloaded when the file changes."""
    key = f"{path}:{os.stat(path).st_mtime_ns}:{device}"
    if key not in _ENHANCERS:
        from ..enhancers.fit import load_enhancer
        _ENHANCERS.clear()
        _ENHANCERS[key] = load_enhancer(path).to(device)
    return _ENHANCERS[key]


def process_videos(jobs: list[Job], T: int, clips: dict, size: tuple[int, int], enhancer_path: str,
                   batch_frames: int, device: str) -> list[dict]:
    """Decode, sample and resize each video; enhance the distinct frames of all of them together.

    One result per video; a failure comes back as {"job", "error": reason}. Frames of
    different videos share enhancer batches (of `batch_frames`): a frame's result does not
    depend on its batch neighbours (tests/test_enhance.py checks it against per-video runs).
    """
    return enhance_decoded(decode_videos(jobs, T, clips, size), enhancer_path, batch_frames, device)


def decode_videos(jobs: list[Job], T: int, clips: dict, size: tuple[int, int], **_) -> dict:
    """The decoding half of `process_videos`: each video's clips, resized, and its distinct frames."""
    from ..datasets.videos import VideoError, decode_clips
    from ..datasets.views import fit_size
    results, distinct, inverses = [], [], []
    for job in jobs:
        try:
            frames, indices = decode_clips(job.path, T, clips[job.split], min(size), max_long_side=0)
        except VideoError as e:
            results.append({"job": job, "error": str(e)})
            continue
        frames = fit_size(frames, size)
        # clips of one video share frames (and short videos repeat them): enhance each once
        _, first, inverse = np.unique(indices.ravel(), return_index=True, return_inverse=True)
        distinct.append(frames.reshape(-1, *frames.shape[2:])[first])
        inverses.append(inverse.ravel())
        st = os.stat(job.path)
        results.append({"job": job, "original": frames, "indices": indices, "size": st.st_size,
                        "moments": [{"original": channel_moments(clip)} for clip in frames]})
    return {"results": results, "distinct": distinct, "inverses": inverses}


def enhance_decoded(decoded: dict, enhancer_path: str, batch_frames: int, device: str, **_) -> list[dict]:
    """The enhancing half of `process_videos`, with each clip's statistics."""
    from ..enhancers.fit import enhance_frames
    results, distinct, inverses = decoded["results"], decoded["distinct"], decoded["inverses"]
    if distinct:
        enhanced = enhance_frames(_enhancer(enhancer_path, device), np.concatenate(distinct),
                                  batch=batch_frames, device=device)
        start = 0
        for r, d, inverse in zip([r for r in results if "error" not in r], distinct, inverses):
            r["enhanced"] = enhanced[start:start + len(d)][inverse].reshape(r["original"].shape)
            start += len(d)
            # per-clip statistics where the frames are made (a dask worker; in this process the
            # original's in the decoding thread), not in the one process that writes every shard
            for moments, clip in zip(r["moments"], r["enhanced"]):
                moments["enhanced"] = channel_moments(clip)
    return results


class _DecodeAhead:
    """In this process: the next task is decoded in a background thread while this one is enhanced
    and written (decord and torch release the GIL), so decoding and enhancing overlap on two
    cores. Results are those of `process_videos`, in task order; one task is decoded ahead, so
    memory grows by one task's frames (TASK_BYTES)."""

    def __init__(self, it, args: dict):
        from concurrent.futures import ThreadPoolExecutor
        self.it, self.args = it, args
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dlkdd-decode")
        self.ahead = self._submit()

    def _submit(self):
        task = next(self.it, None)
        return None if task is None else self.pool.submit(decode_videos, task, **self.args)

    def tasks(self):
        """Each task's results (a list), enhanced here; the next one decodes meanwhile."""
        while self.ahead is not None:
            decoded = self.ahead.result()
            self.ahead = self._submit()
            yield enhance_decoded(decoded, **self.args)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.ahead is not None:
            self.ahead.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _on_worker(jobs: list[Job], threads: int, **args) -> list[dict]:
    """A dask task: the worker process is ours, so its torch threads are set once, at its first task."""
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return process_videos(jobs, **args)


class _torch_threads:
    """In-process: torch threads for the stage only. Training later in the same run must not inherit
    them: its float sums (so its weights) depend on the thread count."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch
        torch.set_num_threads(self.before)


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


# --- planning ------------------------------------------------------------------------------

def list_jobs(cfg) -> tuple[list[Job], list[str]]:
    from ..datasets.videos import read_dataset
    index = read_dataset(cfg.data, dataset_root(cfg))
    jobs = [Job(i, e.path, e.rel, e.split, e.label)
            for i, e in enumerate([*index.entries("train"), *index.entries("val"), *index.entries("test")])]
    return jobs, list(index.classes)


def clip_size(cfg, jobs: list[Job]) -> tuple[int, int]:
    """(H, W) of every cached clip: the first readable video's frame size, short side resized."""
    from ..datasets.videos import VideoError, probe, resize_shape
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
    # validation is scored like test; all splits share sample_indices' offset rule
    clips = {"train": cfg.data.clips_per_video, "val": cfg.data.test_clips, "test": cfg.data.test_clips}
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
    if todo and not (ctx.options.get("scheduler") or cfg.enhance.scheduler) and \
            (cfg.enhance.workers == 0 or cfg.enhance.cluster_after > 0):
        # this process enhances the first tasks before any cluster starts: torch and the enhancer
        # load now, so the summary's seconds and videos_per_s are the pace of the work. (A cluster
        # started at once, cluster_after = 0, starts first and this process loads them meanwhile.)
        _enhancer(enhancer_path, ctx.device)
    t0 = time.time()
    args = dict(T=T, clips=clips, size=size, enhancer_path=enhancer_path,
                batch_frames=cfg.enhance.batch_frames, device=ctx.device)
    tasks = task_plan([j for i in todo for j in plan[i]], T, clips, size)
    writer = ShardWriter(out, plan, fingerprint, cfg.enhance.compression, ctx.options.get("strict")
                         or cfg.enhance.strict)
    try:
        with progress_bar(ctx.console, "  enhance", sum(len(plan[i]) for i in todo), "videos") as update:
            for n, result in enumerate(_map(ctx, tasks, args, cfg.enhance.threads_per_worker), 1):
                writer.add(result)
                update(n)
    except KeyboardInterrupt:
        ctx.console.print(f"  enhance interrupted: {len(done) + writer.written} of {len(plan)} shard(s) "
                          f"finished and kept; the rerun enhances only the others")
        raise
    except ClusterLost as e:
        raise ClusterLost(f"{e}; {len(done) + writer.written} of {len(plan)} shard(s) finished and kept; "
                          f"run the same command again to resume") from None
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
        from ..datasets.shards import write_shard
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
            for c, moments in enumerate(r["moments"]):
                rows.append({"video": job.rel, "split": job.split, "label": job.label, "clip": c,
                             "frames": r["indices"][c].tolist(), "source_size": r["size"],
                             "mean_original": round(sum(moments["original"][:3]) / 3, 5),
                             "mean_enhanced": round(sum(moments["enhanced"][:3]) / 3, 5),
                             "moments": moments})
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


def _map(ctx, tasks: list[list[Job]], args: dict, threads: int):
    """Yield one result per video: in-process (workers = 0), or on a dask cluster.

    Without a scheduler to connect to, this process first works through the tasks itself and
    starts a LocalCluster only once the work left, at the pace measured so far, would take
    longer than `enhance.cluster_after` seconds (what starting one costs), so a small dataset
    never pays for dask. The cluster starts in the background while this process goes on;
    once its workers are up (torch imported, the enhancer loaded) the remaining tasks go to them.
    """
    if not tasks:
        return
    scheduler = ctx.options.get("scheduler") or ctx.cfg.enhance.scheduler
    it = iter(tasks)
    if ctx.cfg.enhance.workers == 0 and not scheduler:
        with _torch_threads(threads), _DecodeAhead(it, args) as here:
            for results in here.tasks():
                yield from results
        return
    if not scheduler and ctx.cfg.enhance.cluster_after > 0:
        worth_it = yield from _until_cluster_pays(it, len(tasks), args, threads, ctx.cfg.enhance.cluster_after)
        if not worth_it:
            return
    from distributed import as_completed
    with _Cluster(ctx.cfg.enhance.workers, scheduler, args, threads) as cluster:
        with _torch_threads(threads):
            while not cluster.ready():
                task = next(it, None)
                if task is None:
                    return
                yield from process_videos(task, **args)
        client = cluster.client
        window = max(2, 2 * sum(client.nthreads().values()))  # tasks in flight: memory does not grow with N
        submit = lambda task: client.submit(_on_worker, task, threads, pure=False, **args)  # noqa: E731
        futures = as_completed([submit(t) for t in _take(it, window)])
        watch = _Watch(client, scheduler or "LocalCluster")
        for fut in _completed(futures, watch):
            yield from _result(fut, watch)
            fut.release()
            for t in _take(it, 1):
                futures.add(submit(t))


def _until_cluster_pays(it, total: int, args: dict, threads: int, after: float):
    """Run tasks from `it` in this process while the rest would take less than `after` seconds at
    the pace of the tasks done so far (the first, which loads torch and the enhancer, is not
    counted). Returns True with tasks left for a cluster, False when `it` is done."""
    done, spent = 0, 0.0
    with _torch_threads(threads), _DecodeAhead(it, args) as here:
        t0 = time.perf_counter()
        for results in here.tasks():
            yield from results  # (the shard writes of its results included)
            done += 1
            now = time.perf_counter()
            if done > 1:
                spent += now - t0
                if spent / (done - 1) * (total - done) > after:
                    if here.ahead is not None:  # the task decoded ahead is finished here too
                        ahead, here.ahead = here.ahead, None
                        yield from enhance_decoded(ahead.result(), **args)
                    return True
            t0 = now
    return False


def _warm_up(threads: int, enhancer_path: str, device: str, **_) -> None:
    """On each worker before its first task: torch threads, the decoder and the enhancer loaded."""
    import torch

    from ..datasets import videos  # noqa: F401 (decord and friends imported now, not inside the first task)
    torch.set_num_threads(threads)
    _enhancer(enhancer_path, device)


class _Cluster:
    """A dask client: an existing scheduler's (connected now), or a LocalCluster started in a thread."""

    def __init__(self, workers: int, scheduler: str, args: dict, threads: int):
        import threading

        from distributed import Client
        # distributed logs at INFO on its own (and tracebacks of closed comms at INFO when a run is
        # interrupted): noise under our own messages, so WARNING while we use it. asyncio reports the
        # gathers of results lost with a dead worker, which `_result` gave up waiting for, at close.
        self.log, self.aio = logging.getLogger("distributed"), logging.getLogger("asyncio")
        self.level, self.aio_level = self.log.level, self.aio.level
        self.log.setLevel(max(self.level, logging.WARNING))
        self.aio.setLevel(logging.CRITICAL)
        self.client = self.cluster = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.lock, self.abandoned = threading.Lock(), False
        if scheduler:
            self.client = Client(scheduler)
            self.started.set()
        else:
            # not a daemon: the interpreter waits for it at exit, so a cluster is always closed
            self.thread = threading.Thread(target=self._start, args=(workers, args, threads))
            self.thread.start()

    def _start(self, workers: int, args: dict, threads: int) -> None:
        from distributed import Client, LocalCluster
        try:
            # passive OpenMP waits: spinning threads starve each other on a busy machine (measured)
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=40,
                                        env={"OMP_WAIT_POLICY": "PASSIVE"})
            self.client = Client(self.cluster)
            if not self.abandoned:  # a run already done or interrupted needs no warm workers
                self.client.run(_warm_up, threads, **args)
        except BaseException as e:  # re-raised in the stage's thread by ready()
            self.error = e
        with self.lock:
            self.started.set()
            abandoned = self.abandoned
        if abandoned:
            self._close()

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.started.is_set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self.lock:
            # all done before the workers came up: their starter closes them once up, while we go on
            self.abandoned = not self.started.is_set()
        if not self.abandoned:
            self._close()

    def _close(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            gc.collect()  # those abandoned gathers are reported when collected: now, while muted
            self.log.setLevel(self.level)
            self.aio.setLevel(self.aio_level)


class _Watch:
    """Raises ClusterLost when the scheduler is gone or has had no worker for NO_WORKERS_PATIENCE
    seconds: dask itself would wait forever for a worker to come back."""

    def __init__(self, client, where: str):
        self.client, self.where = client, where
        self.alone_since, self.next_check = None, 0.0
        self.progress()

    def progress(self) -> None:
        """A result came: the cluster works. Asking the scheduler is a round trip (and a Ctrl-C
        inside one leaves noise in the event loop), so it is asked only after a quiet spell."""
        self.next_check = time.monotonic() + 5.0

    def check(self) -> None:
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 1.0
        try:
            workers = len(self.client.nthreads())
        except Exception as e:  # noqa: BLE001 - a closed comm, a timeout: the scheduler is unreachable
            raise ClusterLost(f"lost the dask scheduler {self.where} ({type(e).__name__})") from None
        self.alone_since = None if workers else self.alone_since or now
        if self.alone_since is not None and now - self.alone_since >= NO_WORKERS_PATIENCE:
            raise ClusterLost(f"dask scheduler {self.where} has had no workers for "
                              f"{NO_WORKERS_PATIENCE:.0f} s")


def _completed(futures, watch: _Watch):
    """Iterate `futures` (an as_completed) as they finish, checking the cluster while none is ready."""
    while not futures.is_empty():
        if futures.has_ready():
            watch.progress()
            yield next(futures)
            continue
        watch.check()
        time.sleep(0.01)


def _result(fut, watch: _Watch) -> list[dict]:
    """The future's result; a finished one whose worker died with its data is computed again."""
    from distributed.scheduler import KilledWorker
    while True:
        try:
            return fut.result(timeout=1.0)
        except TimeoutError:
            watch.check()
        except KilledWorker as e:  # the workers running one task died again and again (OOM, say)
            raise ClusterLost(f"dask scheduler {watch.where}: {str(e).splitlines()[0]}") from None


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def channel_moments(clip: np.ndarray) -> list[float]:
    """[mean r, g, b, mean of squares r, g, b] of a uint8 (T, H, W, 3) clip, in [0, 1] pixel units.

    Exact sums (float64 accumulation of integer values and squares, each exact in float32),
    without a float64 copy of the clip: that copy cost as much as enhancing it with SCI."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.uint8)).reshape(-1, 3).float()
    n = max(1, x.shape[0])
    s1 = x.sum(0, dtype=torch.float64).numpy()
    s2 = (x * x).sum(0, dtype=torch.float64).numpy()
    return [*(s1 / (n * 255.0)).tolist(), *(s2 / (n * 255.0 * 255.0)).tolist()]


def input_statistics(clips: list[dict]) -> dict:
    """Per-stream {"mean": [r, g, b], "std": [r, g, b]} over the TRAIN clips (every clip has T x H x W
    pixels, so the pooled moments are plain averages); validation and test never contribute."""
    train = [c["moments"] for c in clips if c["split"] == "train"]
    stats = {}
    for w in ("original", "enhanced"):
        m = np.array([t[w] for t in train], dtype=np.float64).mean(axis=0) if train else np.zeros(6)
        mean, sq = m[:3], m[3:]
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        stats[w] = {"mean": [round(float(v), 6) for v in mean],
                    "std": [round(float(max(v, 1e-3)), 6) for v in std]}  # a flat channel must not divide by 0
    return stats


def missing_errors(cfg) -> list[dict]:
    """Listed videos that are not on disk (skipped with --skip-missing), reported like unreadable ones."""
    from ..datasets.videos import read_dataset
    return [{"video": e.rel, "path": e.path, "split": e.split,
             "reason": f"{e.source}:{e.line}: video not found: {e.path}"}
            for e in read_dataset(cfg.data, dataset_root(cfg)).missing]


def finish(ctx, plan, classes, size, seconds, todo) -> dict:
    """Assemble index.json and errors.json from the part files; print the summary."""
    out = ctx.out
    clips, errors = [], missing_errors(ctx.cfg)
    for i in range(len(plan)):
        part = json.loads(_part_path(out, i).read_text())
        for row, item in enumerate(part["rows"]):
            clips.append({"id": len(clips), "shard": _shard_name(i), "row": row, **item})
        errors += part["errors"]
    if not clips:
        first = errors[0]["reason"] if errors else "no videos"
        raise EnhanceError(f"no video could be read ({len(errors)} failed; first: {first})")
    cfg = ctx.cfg
    stats = input_statistics(clips)
    for c in clips:
        del c["moments"]
    index = {"format_version": 1, "classes": classes, "T": cfg.data.frames, "H": size[0], "W": size[1],
             "normalize": stats, "clips": clips}  # videos relative to the dataset root, which may move
    atomic.write_json(out / CLIP_INDEX, index)
    atomic.write_json(out / CLIP_ERRORS, errors)
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
