"""Cluster-grade faults: SIGTERM from a scheduler, a lost dask worker, a lost torchrun rank,
parallel sweeps on one cache (per-output locks), datasets with holes.

The CLI runs as a subprocess where a signal or a second process must hit it.
"""
from __future__ import annotations

import json
import os
import random
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
    Proc,
    assert_one_line_error,
    assert_same_shards,
    assert_same_state,
    base_args,
    child_env,
    copy_cache,
    graph_for,
    invoke,
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
    g = graph_for(data, cache, **WORKERS)
    epoch = min(json.loads(line)["seconds"] for line in (cache / "teacher" / "metrics.jsonl").read_text().splitlines())
    return SimpleNamespace(data=data, cache=cache, epoch_seconds=epoch, teacher_seconds=g.record("teacher")["seconds"])


WORKERS = {"teacher.num_workers": 1}  # a DataLoader worker process to be orphaned (or not)


# enhance groups videos into tasks of up to 256 frames: one video per task here, so the tiny
# dataset is spread over the dask workers (and a lost worker loses some of them).
ONE_VIDEO_TASKS = ("import sys; import dlkdd.pipeline.stages.enhancing.plan as p; p.TASK_FRAMES = 4; "
                   "from dlkdd.cli import main; sys.argv[0] = 'dlkdd'; main()")


def enhance_proc(args: list[str]) -> Proc:
    return Proc.command([sys.executable, "-c", ONE_VIDEO_TASKS, *args])


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
def test_sigterm_during_enhance_exits_143_leaves_no_workers_and_the_rerun_resumes(ref, tmp_path):
    cache = tmp_path / "cache"
    rng = random.Random("sigterm-enhance")
    args = [*base_args(ref.data, cache, **{"enhance.workers": 2, "enhance.cluster_after": 0}), "enhance"]
    p = enhance_proc(args)
    p.wait_for(r"▶ enhance: running")
    n = rng.randint(1, 5)  # of 8 shards, then a random moment
    deadline = time.monotonic() + 60
    while parts(cache) < n and p.p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    kids = children(p.pid)
    assert kids, "dask worker processes run the videos"
    p.signal(SIGTERM)
    t0 = time.monotonic()
    assert p.wait() == 143, p.output
    assert time.monotonic() - t0 < 15
    assert not wait_gone(kids), "no orphaned dask worker"
    out = p.output
    assert "Traceback" not in out and "leaked semaphore" not in out, out
    assert "enhance interrupted:" in out and "finished and kept" in out, out
    assert "terminated (SIGTERM): finished shards, checkpoints and records were kept; " \
           "run the same command again to resume" in out
    kept = parts(cache)
    assert 1 <= kept < 8
    assert graph_for(ref.data, cache).status("enhance").state == "missing"
    r = invoke([*args[:-1], "--set", "enhance.workers=0", "enhance"])  # speed-only: same fingerprint
    assert r.exit_code == 0, r.output
    assert f"keeping {kept} finished shard(s) of 8" in r.stderr
    assert_same_shards(ref.cache, cache)


@pytest.mark.slow
def test_sigterm_during_teacher_exits_143_leaves_no_loader_workers_and_the_rerun_resumes(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("soft-labels", "teacher"), data=ref.data)
    rng = random.Random("sigterm-teacher")
    args = [*base_args(ref.data, cache, **WORKERS), "teacher"]
    p = Proc(args)
    epoch = rng.randint(1, 2)  # signalled during epoch `epoch + 1` of 3
    p.wait_for(rf"teacher epoch {epoch}/3")
    time.sleep(rng.uniform(0.1, 0.6) * ref.epoch_seconds)
    kids = children(p.pid)
    p.signal(SIGTERM)
    t0 = time.monotonic()
    assert p.wait() == 143, p.output
    assert time.monotonic() - t0 < 15
    assert kids and not wait_gone(kids), "no orphaned DataLoader worker"
    out = p.output
    assert "Traceback" not in out, out
    kept = load_checkpoint(cache / "teacher" / "checkpoint.pt")["epoch"]
    assert kept >= epoch
    assert (f"teacher interrupted: checkpoint of epoch {kept}/3 kept; the rerun resumes from it" in out
            or kept == 3), out
    assert "terminated (SIGTERM):" in out and "run the same command again to resume" in out
    assert graph_for(ref.data, cache, **WORKERS).status("teacher").state == "missing"
    p = Proc(args)
    assert p.wait() == 0, p.output
    assert (f"resuming from epoch {kept}/3" in p.output or "already trained (3/3 epochs)" in p.output), p.output
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
    first = Proc(args)
    first.wait_for(r"▶ teacher: running")
    t0 = time.monotonic()
    second = invoke(args)
    assert_one_line_error(second, f"cache {cache}: teacher is in use by pid {first.pid} on ",
                          "teacher --force", "since ", "(writing it)", "--wait")
    assert time.monotonic() - t0 < 10, "fails fast, does not wait by default"
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

def dask_workers(pid: int) -> list[psutil.Process]:
    """The worker processes of a LocalCluster started by `pid` (multiprocessing spawns them)."""
    found = []
    for c in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(c.cmdline()):
                found.append(c)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
def test_a_dask_worker_killed_mid_enhance_the_run_completes_with_equal_shards(ref, tmp_path):
    cache = tmp_path / "cache"
    args = [*base_args(ref.data, cache, **{"enhance.workers": 2, "enhance.cluster_after": 0}), "enhance"]
    p = enhance_proc(args)
    p.wait_for(r"▶ enhance: running")
    deadline = time.monotonic() + 60
    workers = []
    # the cluster is at work (both worker processes up; this process may finish the first shards
    # itself while they start) with 6 of 8 shards to go
    while parts(cache) < 2 or len(workers) < 2:
        assert time.monotonic() < deadline and p.p.poll() is None, p.output
        time.sleep(0.005)
        workers = dask_workers(p.pid) if len(workers) < 2 else workers
    assert len(workers) == 2, workers
    assert parts(cache) < 8
    workers[0].send_signal(signal.SIGKILL)
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
    rng = random.Random("lost-rank")
    p = Proc.command([*launcher, *args])
    epoch = rng.randint(1, 3)
    p.wait_for(rf"teacher epoch {epoch}/8")
    ranks = rank_processes(p.pid)
    assert sorted(ranks) == [0, 1], ranks
    time.sleep(rng.uniform(0.1, 0.5) * ref.epoch_seconds)
    ranks[1].send_signal(signal.SIGKILL)
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
    assert epoch <= kept < 8
    p = Proc.command([*launcher, *args])
    assert p.wait() == 0, p.output
    assert f"resuming from epoch {kept}/8" in p.output
    epochs = [json.loads(x)["epoch"] for x in (cache / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))
    assert graph_for(ref.data, cache, **{"teacher.epochs": 8}).status("teacher").state == "fresh"
