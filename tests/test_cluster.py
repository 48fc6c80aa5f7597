"""Cluster-grade faults: SIGTERM from a scheduler, a lost dask worker, a lost torchrun rank,
parallel sweeps on one cache (per-output locks), datasets with holes.

The CLI runs as a subprocess where a signal or a second process must hit it.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from distributed import LocalCluster
from relfix import (
    FAILPOINT_LINE,
    SIGUSR1,
    ZERO_DCE,
    Proc,
    assert_one_line_error,
    assert_same_shards,
    assert_same_state,
    at_failpoint,
    base_args,
    child_env,
    copy_cache,
    graph_for,
    invoke,
    wait_for_dask_workers,
)
from videofix import make_video_dataset

from dlkdd.pipeline.engine import signals
from dlkdd.pipeline.stages.enhancing import cluster as enhance_cluster
from dlkdd.pipeline.stages.enhancing import plan as enhance_plan
from dlkdd.pipeline.training.checkpoints import load_checkpoint

SIGTERM = signal.SIGTERM


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """2 classes x 4 videos, and `dlkdd soft-labels` over them (DataLoader worker processes on)."""
    base = tmp_path_factory.mktemp("cluster")
    data = make_video_dataset(base / "data", classes=2, train=3, test=1, frames=10, h=32, w=32)
    cache = base / "ref"
    r = invoke([*base_args(data, cache, **WORKERS), "soft-labels"])
    assert r.exit_code == 0, r.output
    steps = load_checkpoint(cache / "teacher" / "checkpoint.pt")["scheduler"]["total_steps"] // 3  # per epoch
    return SimpleNamespace(data=data, cache=cache, steps=steps)


WORKERS = {"teacher.num_workers": 1}  # a DataLoader worker process to be orphaned (or not)


# enhance groups videos into tasks of up to 256 frames: one video per task here, so the tiny
# dataset is spread over the dask workers (and a lost worker loses some of them).
ONE_VIDEO_TASKS = ("import sys; import dlkdd.pipeline.stages.enhancing.plan as p; p.TASK_FRAMES = 4; "
                   "from dlkdd.cli import main; sys.argv[0] = 'dlkdd'; main()")


def enhance_at_failpoint(args: list[str], point: str) -> Proc:
    """`dlkdd ARGS` with one-video tasks, paused at failpoint `point`."""
    return at_failpoint([], point, argv=[sys.executable, "-c", ONE_VIDEO_TASKS, *args])


def children(pid: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    """The pids still alive (zombies count as gone) after waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def parts(cache: Path) -> int:
    folder = cache / "clips" / "parts"
    return len(list(folder.glob("shard-*.json"))) if folder.is_dir() else 0


# ----------------------------------------------------------------------------- SIGTERM

def test_sigterm_raises_terminated_after_a_checkpoint_write_under_way_and_handlers_are_restored():
    before = signal.getsignal(SIGTERM)
    written = []
    with pytest.raises(signals.Terminated) as e:
        with signals.handled():
            with signals.deferred():  # as around the epoch checkpoint's save
                os.kill(os.getpid(), SIGTERM)
                time.sleep(0.05)
                written.append("checkpoint")  # the write under way finishes
            written.append("next epoch")  # never reached
    assert written == ["checkpoint"]
    assert signals.exit_code(e.value) == 143 and signals.describe(e.value) == "terminated (SIGTERM)"
    assert signals.exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(SIGTERM) is before  # an in-process caller gets its own handler back


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gamma", "zero_dce++"])
def test_sigterm_during_enhance_exits_143_leaves_no_workers_and_the_rerun_resumes(ref, tmp_path, kind):
    extra = {} if kind == "gamma" else ZERO_DCE
    cache = tmp_path / "cache"
    args = [*base_args(ref.data, cache, **extra, **{"enhance.workers": 2, "enhance.cluster_after": 0}), "enhance"]
    n = random.Random(f"sigterm-enhance-{kind}").randint(1, 5)  # of 8 shards finished when SIGTERM comes
    p = enhance_at_failpoint(args, f"enhance:shard@{n}")
    wait_for_dask_workers(p, 2)  # started in a thread, while this process may enhance the first videos
    kids = children(p.pid)
    p.signal(SIGTERM)
    t0 = time.monotonic()
    assert p.wait() == 143, p.output
    assert time.monotonic() - t0 < 15
    assert not wait_gone(kids), "no orphaned dask worker"
    out = p.output
    assert "Traceback" not in out and "leaked semaphore" not in out, out
    assert f"enhance interrupted: {n} of 8 shard(s) finished and kept" in out, out
    assert "terminated (SIGTERM): finished shards, checkpoints and records were kept; " \
           "run the same command again to resume" in out
    assert parts(cache) == n
    assert graph_for(ref.data, cache, **extra).status("enhance").state == "missing"
    # a speed-only setting, the same fingerprint: the rest in this process, in tasks of many videos
    # (the dask run had one video a task), with the dask workers' torch threads (2)
    r = invoke([*args[:-1], "--set", "enhance.workers=0", "enhance"])
    assert r.exit_code == 0, r.output
    assert f"keeping {n} finished shard(s) of 8" in r.stderr
    clean = ref.cache
    if kind != "gamma":  # an uninterrupted run, in this process, in the default tasks
        clean = tmp_path / "clean"
        assert invoke([*base_args(ref.data, clean, **extra), "enhance"]).exit_code == 0
    assert_same_shards(clean, cache)


@pytest.mark.slow
def test_sigterm_during_teacher_exits_143_leaves_no_loader_workers_and_the_rerun_resumes(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("soft-labels", "teacher"), data=ref.data)
    args = [*base_args(ref.data, cache, **WORKERS), "teacher"]
    # mid-epoch 2 or 3 (no mid-epoch checkpoint), or while an epoch's checkpoint is being written
    # (the write is finished first, then the run stops)
    point, kept = random.Random("sigterm-teacher").choice(
        [*((f"train:step@{n}", (n - 1) // ref.steps) for n in range(ref.steps + 1, 3 * ref.steps + 1)),
         ("write:checkpoint.pt@1", 1), ("write:checkpoint.pt@2", 2)])
    p = at_failpoint(args, point)
    kids = children(p.pid)
    p.signal(SIGTERM)
    t0 = time.monotonic()
    assert p.wait() == 143, p.output
    assert time.monotonic() - t0 < 15
    assert kids and not wait_gone(kids), "no orphaned DataLoader worker"
    out = p.output
    assert "Traceback" not in out, out
    assert load_checkpoint(cache / "teacher" / "checkpoint.pt")["epoch"] == kept, point
    assert f"teacher interrupted: checkpoint of epoch {kept}/3 kept; the rerun resumes from it" in out, out
    assert "terminated (SIGTERM):" in out and "run the same command again to resume" in out
    assert not list((cache / "teacher").glob("*.tmp"))
    assert graph_for(ref.data, cache, **WORKERS).status("teacher").state == "missing"
    p = Proc(args)
    assert p.wait() == 0, p.output
    assert f"resuming from epoch {kept}/3" in p.output, p.output
    assert_same_state(ref.cache / "teacher" / "model.pt", cache / "teacher" / "model.pt")
    epochs = [json.loads(x)["epoch"] for x in (cache / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


# ----------------------------------------------------------------------------- locks per output

def both_running(a: Proc, b: Proc, stage: str, timeout: float = 120) -> bool:
    """Whether there was a moment when both processes were inside `stage` at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (a.p.poll() is None or b.p.poll() is None):
        started = all(f"▶ {stage}: running" in p.output for p in (a, b))
        done = any(f"✓ {stage}: done" in p.output for p in (a, b))
        if started and not done:
            return True
        if done:
            return False
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_two_student_variants_train_at_once_on_one_cache_each_equal_to_its_sequential_run(ref, tmp_path):
    variants = ({"student.alpha": 0.3, "student.epochs": 4}, {"student.alpha": 0.7, "student.epochs": 4})
    cache = copy_cache(ref.cache, tmp_path / "cache")
    a, b = (Proc([*base_args(ref.data, cache, **WORKERS, **v), "student"]) for v in variants)
    assert both_running(a, b, "student"), a.output + b.output
    # Meanwhile the clips they read cannot be rewritten underneath them.
    r = invoke([*base_args(ref.data, cache, **WORKERS), "enhance", "--force"])
    line = assert_one_line_error(r, f"cache {cache}: clips is in use by pid ", "(reading it)", "--wait")
    assert f"pid {a.pid} " in line or f"pid {b.pid} " in line
    assert a.wait() == 0, a.output
    assert b.wait() == 0, b.output
    sequential = copy_cache(ref.cache, tmp_path / "sequential")
    for v in variants:
        assert invoke([*base_args(ref.data, sequential, **WORKERS, **v), "student"]).exit_code == 0
    for v in variants:
        folder = graph_for(ref.data, cache, **WORKERS, **v).out_dir("student").relative_to(cache)
        assert_same_state(sequential / folder / "model.pt", cache / folder / "model.pt")
        assert graph_for(ref.data, cache, **WORKERS, **v).status("student").state == "fresh"
    assert graph_for(ref.data, cache, **WORKERS).statuses(["enhance"], verify=True)["enhance"].state == "fresh"


@pytest.mark.slow
def test_two_teacher_force_at_once_the_second_fails_fast_naming_the_holder_or_waits(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    args = [*base_args(ref.data, cache, **WORKERS), "teacher", "--force"]
    first = at_failpoint(args, "train:step@1")  # paused inside the stage, holding its lock
    t0 = time.monotonic()
    second = invoke(args)
    assert_one_line_error(second, f"cache {cache}: teacher is in use by pid {first.pid} on ",
                          "teacher --force", "since ", "(writing it)", "--wait")
    assert time.monotonic() - t0 < 10, "fails fast, does not wait by default"
    first.signal(SIGUSR1)  # the first goes on
    third = invoke([*args, "--wait", "300"])  # waits for the first, then retrains (--force)
    assert "✓ teacher: done" in first.output  # it waited for the first to finish writing
    assert first.wait() == 0, first.output
    assert third.exit_code == 0, third.output
    assert "▶ teacher: running (--force)" in third.stderr
    assert_same_state(ref.cache / "teacher" / "model.pt", cache / "teacher" / "model.pt")


# ----------------------------------------------------------------------------- datasets with holes

def test_missing_videos_are_reported_at_once_and_skip_missing_goes_on_listing_them(tmp_path):
    data = make_video_dataset(tmp_path / "data", classes=2, train=3, test=1, frames=10, h=32, w=32)
    train, test = data / "splits" / "train.txt", data / "splits" / "test.txt"
    with open(train, "a") as f:
        f.write("6\t0\tC0/gone_1.mp4\n7\t1\tC1/gone_2.mp4\n")
    with open(test, "a") as f:
        f.write("2\t1\tC1/gone_3.mp4\n")
    cache = tmp_path / "cache"
    args = base_args(data, cache)
    line = assert_one_line_error(invoke([*args, "enhance"]), "3 listed videos not found: ",
                                 f"{train}:7: C0/gone_1.mp4", f"{train}:8: C1/gone_2.mp4",
                                 f"{test}:3: C1/gone_3.mp4", "--skip-missing")
    assert line.index(f"{train}:7") < line.index(f"{train}:8") < line.index(f"{test}:3")
    assert not (cache / "clips").exists()
    r = invoke([*args, "enhance", "--skip-missing"])
    assert r.exit_code == 0, r.output
    assert "8 clips from 8 videos in 8 shard(s)" in r.stderr and "3 failed" in r.stderr, r.stderr
    assert f"failed {train}:7: video not found: {data / 'C0/gone_1.mp4'}" in r.stderr
    errors = json.loads((cache / "clips" / "errors.json").read_text())
    assert [(e["video"], e["split"]) for e in errors] == [
        ("C0/gone_1.mp4", "train"), ("C1/gone_2.mp4", "train"), ("C1/gone_3.mp4", "test")]
    assert graph_for(data, cache, **{"data.skip_missing": True}).record("enhance")["summary"]["failed"] == 3
    status = json.loads(invoke([*args, "status", "--json", "--skip-missing"]).stdout)["stages"]
    assert {s["stage"]: s["state"] for s in status}["enhance"] == "fresh"
    # a missing video that turns up makes enhance stale, naming it
    shutil.copy(data / "C0" / "C0_0.mp4", data / "C0" / "gone_1.mp4")
    st = graph_for(data, cache, **{"data.skip_missing": True}).status("enhance")
    assert st.state == "stale" and "inputs changed gone_1.mp4" in st.reasons[0].replace("C0/", ""), st.reasons


# ----------------------------------------------------------------------------- a lost dask worker

@pytest.mark.slow
def test_a_dask_worker_killed_mid_enhance_the_run_completes_with_equal_shards(ref, tmp_path):
    cache = tmp_path / "cache"
    args = [*base_args(ref.data, cache, **{"enhance.workers": 2, "enhance.cluster_after": 0}), "enhance"]
    # paused with 2 of 8 shards finished (this process may do the first ones itself while the
    # cluster starts) until both worker processes are up; one is killed, then the run goes on
    p = enhance_at_failpoint(args, "enhance:shard@2")
    workers = wait_for_dask_workers(p, 2)
    assert parts(cache) == 2
    workers[0].send_signal(signal.SIGKILL)
    p.signal(SIGUSR1)
    assert p.wait() == 0, p.output
    assert "Traceback" not in p.output
    assert parts(cache) == 8 and "8 clips from 8 videos" in p.output, p.output
    assert_same_shards(ref.cache, cache)
    assert graph_for(ref.data, cache).statuses(["enhancer", "enhance"], verify=True)["enhance"].state == "fresh"


@pytest.mark.slow
def test_when_every_dask_worker_is_gone_one_line_names_the_scheduler_and_what_was_kept(ref, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(enhance_cluster, "NO_WORKERS_PATIENCE", 2.0)
    monkeypatch.setattr(enhance_plan, "TASK_FRAMES", 4)
    cache = tmp_path / "cache"
    # a bare scheduler
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny",
                                   "--nthreads", "1"], env=child_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            def kill_after_two_shards():
                deadline = time.monotonic() + 120
                while parts(cache) < 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                worker.kill()
            killer = threading.Thread(target=kill_after_two_shards, daemon=True)
            killer.start()
            t0 = time.monotonic()
            r = invoke([*base_args(ref.data, cache), "enhance", "--scheduler", address])
            killer.join()
        finally:
            worker.kill()
            worker.wait()
    kept = parts(cache)
    assert_one_line_error(r, f"dask scheduler {address} has had no workers for 2 s",
                          f"{kept} of 8 shard(s) finished and kept", "run the same command again to resume")
    assert 2 <= kept < 8 and time.monotonic() - t0 < 100
    r = invoke([*base_args(ref.data, cache), "enhance"])  # in-process this time
    assert r.exit_code == 0 and f"keeping {kept} finished shard(s) of 8" in r.stderr, r.output
    assert_same_shards(ref.cache, cache)


# ----------------------------------------------------------------------------- a lost torchrun rank

def rank_processes(pid: int) -> dict[int, psutil.Process]:
    found = {}
    for c in psutil.Process(pid).children(recursive=True):
        try:
            rank = c.environ().get("RANK")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if rank is not None:
            found[int(rank)] = c
    return found


@pytest.mark.slow
def test_a_torchrun_rank_killed_mid_epoch_the_survivor_exits_within_60_s_and_the_rerun_resumes(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("soft-labels", "teacher"), data=ref.data)
    args = [*base_args(ref.data, cache, **{"teacher.epochs": 8}), "teacher"]
    launcher = [str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", "2", "-m", "dlkdd.cli"]
    # both ranks pause after the same optimizer step, after epoch 1 and before epoch 8 (a rank
    # takes from ref.steps / 2 to ref.steps steps an epoch); rank 1 is killed there and rank 0
    # goes on, into a collective that can no longer complete
    n = random.Random("lost-rank").randint(ref.steps + 1, max(ref.steps + 1, 4 * ref.steps - 1))
    p = at_failpoint([], f"train:step@{n}", argv=[*launcher, *args])
    deadline = time.monotonic() + 60
    while len([line for line in p.lines if re.search(FAILPOINT_LINE, line)]) < 2:
        assert time.monotonic() < deadline and p.p.poll() is None, p.output
        time.sleep(0.05)
    ranks = rank_processes(p.pid)
    assert sorted(ranks) == [0, 1], ranks
    ranks[1].send_signal(signal.SIGKILL)
    ranks[0].send_signal(SIGUSR1)
    t0 = time.monotonic()
    try:
        ranks[0].wait(60)
    except psutil.TimeoutExpired:
        pytest.fail("the surviving rank hangs")
    assert time.monotonic() - t0 < 60
    assert p.wait() != 0
    out = p.output
    assert "[rank0]: Traceback" not in out, out
    kept = load_checkpoint(cache / "teacher" / "checkpoint.pt")["epoch"]
    lines = [line for line in out.splitlines() if "Error: teacher: rank 0 lost another rank" in line
             or line.startswith("teacher interrupted: checkpoint of epoch")]
    assert len(lines) == 1 and f"checkpoint of epoch {kept}/8 kept; the rerun resumes from it" in lines[0], out
    assert 1 <= kept < 8
    p = Proc.command([*launcher, *args])
    assert p.wait() == 0, p.output
    assert f"resuming from epoch {kept}/8" in p.output
    rank_steps = load_checkpoint(cache / "teacher" / "checkpoint.pt")["scheduler"]["total_steps"] // 8
    assert kept == (n - 1) // rank_steps  # the epochs whose checkpoint came before step n
    epochs = [json.loads(x)["epoch"] for x in (cache / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))
    assert graph_for(ref.data, cache, **{"teacher.epochs": 8}).status("teacher").state == "fresh"
