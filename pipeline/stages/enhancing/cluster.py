"""Tasks run on a dask cluster: an existing scheduler's, or a LocalCluster started in a thread
while this process works through the first tasks itself; a bounded window of tasks in flight.

A worker that dies is replaced (LocalCluster's nanny) and dask reruns its tasks elsewhere; a
scheduler that is gone, or has had no worker for NO_WORKERS_PATIENCE seconds, is given up on.
"""
from __future__ import annotations

import gc
import logging
import threading
import time

import dask
from distributed import Client, LocalCluster, as_completed
from distributed.scheduler import KilledWorker

from .local import torch_threads
from .plan import ClusterLost
from .task import load_enhancer_once, process_videos

# A cluster left with no worker at all for this long is given up on instead of waited on forever.
NO_WORKERS_PATIENCE = 30.0


def run_on_cluster(it, workers: int, scheduler: str, args: dict, threads: int):
    """Yield one result per video of every task in `it`: in this process until the cluster is up
    (torch imported, the enhancer loaded on each worker), then on the cluster."""
    with Cluster(workers, scheduler, args, threads) as cluster:
        with torch_threads(threads):
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


def _on_worker(jobs: list, threads: int, **args) -> list[dict]:
    """A dask task: the worker process is ours, so its torch threads are set once, at its first task."""
    import torch  # deferred: this process starts the cluster before it loads torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return process_videos(jobs, **args)


def _warm_up(threads: int, enhancer_path: str, device: str, **_) -> None:
    """On each worker before its first task: torch threads set and the enhancer loaded (the decoder
    came with this module)."""
    import torch  # deferred: this process starts the cluster before it loads torch
    torch.set_num_threads(threads)
    load_enhancer_once(enhancer_path, device)


class Cluster:
    """A dask client: an existing scheduler's (connected now), or a LocalCluster started in a thread."""

    def __init__(self, workers: int, scheduler: str, args: dict, threads: int):
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
        try:
            # passive OpenMP waits: spinning threads starve each other on a busy machine (measured).
            # Without dask's MALLOC_TRIM_THRESHOLD_=65536 for its workers: glibc then hands every freed
            # tensor back to the kernel and faults it in again, and the enhancer ran 2.2x slower for it
            # (the same in this process with that variable set; benchmarks/RESULTS.md, issue 22).
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
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
