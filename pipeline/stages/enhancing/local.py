"""Tasks run in this process: the next task decodes in a thread while this one is enhanced, with
the stage's torch threads; and, before any cluster, the measure of whether one would pay.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .task import decode_videos, enhance_decoded


@contextmanager
def torch_threads(n: int):
    """Torch threads for the stage only. Training later in the same run must not inherit them: its
    float sums (so its weights) depend on the thread count."""
    import torch  # deferred: with cluster_after = 0 the cluster starts before this process loads torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DecodeAhead:
    """The next task is decoded in a background thread while this one is enhanced and written
    (decord and torch release the GIL), so decoding and enhancing overlap on two cores. Results
    are those of `process_videos`, in task order; one task is decoded ahead, so memory grows by
    one task's frames (TASK_BYTES)."""

    def __init__(self, it, args: dict):
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


def run_here(it, args: dict, threads: int):
    """Yield one result per video of every task in `it`, all in this process."""
    with torch_threads(threads), DecodeAhead(it, args) as here:
        for results in here.tasks():
            yield from results


def until_cluster_pays(it, total: int, args: dict, threads: int, after: float):
    """Run tasks from `it` in this process while the rest would take less than `after` seconds at
    the pace of the tasks done so far (the first, which loads torch and the enhancer, is not
    counted). Returns True with tasks left for a cluster, False when `it` is done."""
    done, spent = 0, 0.0
    with torch_threads(threads), DecodeAhead(it, args) as here:
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
