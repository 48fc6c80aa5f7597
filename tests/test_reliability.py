"""Reliability: kill -9, Ctrl-C, corruption, a second process, malicious files, writes outside the cache.

Users run dlkdd for hours on thousands of videos; none of these may cost them a cache
or give a silently wrong result. The CLI runs as a subprocess where a signal must hit
it, in-process otherwise (interpreter start-up is most of a tiny stage's time).
"""
from __future__ import annotations

import ast
import json
import math
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from relfix import (
    REPO,
    SIGINT,
    SIGKILL,
    SIGUSR1,
    ZERO_DCE,
    Proc,
    assert_one_line_error,
    assert_same_shards,
    assert_same_state,
    at_failpoint,
    base_args,
    child_env,
    chunk_offset,
    copy_cache,
    flip_byte,
    graph_for,
    invoke,
    logits,
    run_cli,
    wait_for_dask_workers,
)
from videofix import make_video_dataset

from dlkdd.pipeline.datasets.clips import read_logits
from dlkdd.pipeline.datasets.shards import ClipDataset, ShardError
from dlkdd.pipeline.enhancers.build import load_enhancer
from dlkdd.pipeline.stages.table import closure
from dlkdd.pipeline.training.checkpoints import CheckpointError, load_checkpoint, load_trained

STAGES = ("enhance", "teacher", "soft-labels", "student")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """2 classes x 3 videos and an uninterrupted `dlkdd student` run over them, as a subprocess."""
    base = tmp_path_factory.mktemp("rel")
    data = make_video_dataset(base / "data", classes=2, train=2, test=1, frames=10, h=32, w=32)
    cache = base / "ref"
    rc, out = run_cli([*base_args(data, cache), "student"])
    assert rc == 0, out
    g = graph_for(data, cache)
    # what the kill points are drawn from: optimizer steps per epoch, shards, teacher batches
    steps = {name: load_checkpoint(g.out_dir(name) / "checkpoint.pt")["scheduler"]["total_steps"] // 3
             for name in ("teacher", "student")}
    batches = math.ceil(g.record("soft-labels")["summary"]["clips"] / g.cfg.soft_labels.batch_size)
    return SimpleNamespace(data=data, cache=cache, extra={}, student=g.out_dir("student").name, steps=steps,
                           shards=g.record("enhance")["summary"]["shards"], batches=batches)


@pytest.fixture(scope="module")
def ref_zero_dce(ref, tmp_path_factory):
    """The same videos' clips with the default enhancer, zero_dce++ (a short fit): float convolutions,
    unlike gamma's lookup table, could show it if batching or thread counts changed the bytes."""
    cache = tmp_path_factory.mktemp("rel-zero-dce") / "ref"
    r = invoke([*base_args(ref.data, cache, **ZERO_DCE), "enhance"])
    assert r.exit_code == 0, r.output
    g = graph_for(ref.data, cache, **ZERO_DCE)
    return SimpleNamespace(**{**vars(ref), "cache": cache, "extra": ZERO_DCE,
                              "shards": g.record("enhance")["summary"]["shards"]})


def out_dir(cache: Path, stage: str, ref) -> Path:
    return cache / ("student/" + ref.student if stage == "student" else
                    {"enhance": "clips", "teacher": "teacher", "soft-labels": "soft-labels"}[stage])


def assert_same_output(ref, cache: Path, stage: str) -> None:
    """What the stage wrote equals what the uninterrupted run wrote."""
    if stage == "enhance":
        assert_same_shards(ref.cache, cache)
        assert (json.loads((cache / "clips" / "index.json").read_text())
                == json.loads((ref.cache / "clips" / "index.json").read_text()))
    elif stage == "soft-labels":
        assert np.array_equal(logits(cache), logits(ref.cache), equal_nan=True)  # test rows are NaN
    else:
        assert_same_state(out_dir(ref.cache, stage, ref) / "model.pt", out_dir(cache, stage, ref) / "model.pt")


def assert_consistent(ref, cache: Path, stage: str) -> str:
    """Every recorded stage verifies byte for byte; the target is fresh and whole, or missing."""
    g = graph_for(ref.data, cache, **ref.extra)
    states = g.statuses(closure(stage), verify=True)
    for name, st in states.items():
        assert st.state in ("fresh", "missing"), (name, st.reasons)
        assert name == stage or st.state == "fresh", (name, st.reasons)
        for rel in (st.record or {}).get("outputs", {}):
            assert not rel.endswith(".tmp"), rel
    if states[stage].state == "fresh":
        assert_same_output(ref, cache, stage)
    elif any(out_dir(cache, stage, ref).iterdir()):
        assert states[stage].reasons == ["not finished: an earlier run stopped before writing its record"]
    return states[stage].state


def assert_all_fresh(ref, cache: Path) -> None:
    """Every stage the reference ran is fresh, each output checked against its recorded sha256."""
    states = graph_for(ref.data, cache).statuses(closure("student"), verify=True)
    assert all(s.state == "fresh" for s in states.values()), {n: s.reasons for n, s in states.items()}


def kept_progress(ref, cache: Path, stage: str) -> int:
    """Finished shards (enhance) or checkpointed epochs (training) an interrupted run left behind."""
    out = out_dir(cache, stage, ref)
    if stage == "enhance":
        return len(list((out / "parts").glob("shard-*.json"))) if (out / "parts").is_dir() else 0
    if stage == "soft-labels":
        return 0
    try:
        return load_checkpoint(out / "checkpoint.pt")["epoch"]
    except CheckpointError:
        return 0


# ----------------------------------------------------------------------------- 1. kill -9

KILLS = {"enhance": 3, "teacher": 3, "soft-labels": 2, "student": 2}


def lock_note_pids(cache: Path) -> set[int]:
    """Pids named by the holder notes of the cache's per-output locks."""
    return {json.loads(n.read_text())["pid"] for n in (cache / "locks").glob("*.json")}


def kill_point(ref, stage: str, kept: int, rng: random.Random) -> tuple[str, int]:
    """A seeded random failpoint inside what is left of the stage, given the progress `kept` by the
    runs before, and the progress a kill -9 there leaves (a failpoint pauses the run at that point,
    however fast the machine: the kill always lands mid-stage)."""
    if stage == "enhance":  # shards are written in order, in this process
        last = ref.shards - 1
        choices = [(f"write:shard-{t:05d}.h5", t) for t in range(max(kept, 1), last + 1)]  # before its rename
        choices += [(f"write:shard-{t:05d}.json", t) for t in range(max(kept, 1), last + 1)]  # whole, unmarked
        choices += [(f"enhance:shard@{n}", kept + n) for n in range(1, last - kept + 1)]  # n more finished
    elif stage == "soft-labels":  # nothing to keep: logits.h5 is whole or absent
        choices = [(f"soft-labels:batch@{n}", 0) for n in range(1, ref.batches + 1)] + [("write:logits.h5", 0)]
    else:
        steps, left = ref.steps[stage], 3 - kept
        choices = [(f"train:step@{n}", kept + (n - 1) // steps) for n in range(1, left * steps + 1)]
        choices += [(f"train:epoch@{n}", kept + n) for n in range(1, left + 1)]  # after its checkpoint
        choices += [(f"write:checkpoint.pt@{n}", kept + n - 1) for n in range(1, left + 1)]
        choices += [("write:model.pt", 3)]  # every epoch done, the final weights not yet in place
    return rng.choice(choices)


def assert_resumed(ref, output: str, stage: str, kept: int) -> None:
    """A run after an interruption says what it kept of the earlier runs' work, and only then."""
    if stage == "enhance":
        said = re.findall(r"keeping \d+ finished shard\(s\) of \d+", output)
        assert said == ([f"keeping {kept} finished shard(s) of {ref.shards}"] if kept else []), output
    elif stage in ("teacher", "student"):
        said = re.findall(r"resuming from epoch \d+/\d+", output)
        assert said == ([f"resuming from epoch {kept}/3"] if kept else []), output


@pytest.mark.slow
@pytest.mark.parametrize("stage, kind", [*((s, "gamma") for s in STAGES), ("enhance", "zero_dce++")])
def test_kill_9_mid_stage_then_rerun_resumes_and_equals_an_uninterrupted_run(request, tmp_path, stage, kind):
    ref = request.getfixturevalue("ref" if kind == "gamma" else "ref_zero_dce")
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=(stage,), data=ref.data, extra=ref.extra)
    args = [*base_args(ref.data, cache, **ref.extra), stage]
    rng = random.Random(f"kill-{stage}-{kind}")
    kept = 0
    for _ in range(KILLS[stage] if kind == "gamma" else 2):
        point, expected = kill_point(ref, stage, kept, rng)
        p = at_failpoint(args, point)
        assert_resumed(ref, p.output, stage, kept)  # this run took up what the last one kept
        p.signal(SIGKILL)
        assert p.wait() == -9, p.output
        assert assert_consistent(ref, cache, stage) == "missing", point  # never fresh, never half-done
        kept = kept_progress(ref, cache, stage)
        assert kept == expected, (point, kept)
        assert p.pid in lock_note_pids(cache)  # the dead holder's note is left...
    p = Proc(args)  # ...and the kernel freed its flock: the rerun proceeds
    assert p.wait() == 0, p.output
    assert "Traceback" not in p.output and f"▶ {stage}: running" in p.output
    assert_resumed(ref, p.output, stage, kept)
    assert assert_consistent(ref, cache, stage) == "fresh"
    assert_same_output(ref, cache, stage)
    out = out_dir(cache, stage, ref)
    assert not list(out.rglob("*.tmp")), "partial files of killed writers are cleaned up"
    if stage in ("teacher", "student"):
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]


# ----------------------------------------------------------------------------- 6. Ctrl-C

@pytest.mark.slow
def test_ctrl_c_during_enhance_stops_keeps_finished_shards_and_resumes(tmp_path):
    """The one dask case: Ctrl-C while this process enhances, with a LocalCluster worker process up."""
    data = make_video_dataset(tmp_path / "data", classes=2, train=8, test=2, frames=10, h=32, w=32)
    cache = tmp_path / "cache"
    args = [*base_args(data, cache, **{"enhance.workers": 1, "enhance.threads_per_worker": 1,
                                             "enhance.cluster_after": 0}), "enhance"]
    n = random.Random("ctrl-c-enhance").randint(1, 19)  # shards of 20 finished when Ctrl-C comes
    p = at_failpoint(args, f"enhance:shard@{n}")
    workers = wait_for_dask_workers(p, 1)  # the cluster starts in a thread meanwhile
    p.signal(SIGINT)
    t0 = time.monotonic()
    assert p.wait() == 130, p.output
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 20  # the cluster is shut down with it: no orphaned workers
    while any(w.is_running() and w.status() != "zombie" for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if w.is_running() and w.status() != "zombie"]
    out = p.output
    assert "Traceback" not in out
    assert f"enhance interrupted: {n} of 20 shard(s) finished and kept" in out, out
    assert "run the same command again to resume" in out
    assert len(list((cache / "clips" / "parts").glob("shard-*.json"))) == n
    same = {"enhance.threads_per_worker": 1}  # a param (float sums depend on it); workers are speed only
    st = graph_for(data, cache, **same).status("enhance")
    assert st.state == "missing" and "not finished" in st.reasons[0]
    r = invoke([*args[:-1], "--set", "enhance.workers=0", "enhance"])  # speed-only: the same fingerprint
    assert r.exit_code == 0, r.output
    assert f"keeping {n} finished shard(s) of 20" in r.stderr
    assert graph_for(data, cache, **same).statuses(["enhancer", "enhance"], verify=True)["enhance"].state == "fresh"
    clean = tmp_path / "clean"  # in-process, no dask: the same shards
    assert invoke([*base_args(data, clean), "enhance"]).exit_code == 0
    assert_same_shards(clean, cache)


@pytest.mark.slow
def test_ctrl_c_during_teacher_training_stops_and_resumes_from_the_checkpoint(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("teacher", "soft-labels", "student"), data=ref.data)
    args = [*base_args(ref.data, cache, **{"teacher.epochs": 8}), "teacher"]
    rng, steps = random.Random("ctrl-c-teacher"), ref.steps["teacher"]
    point, kept = rng.choice([*((f"train:step@{n}", (n - 1) // steps) for n in range(steps + 1, 7 * steps + 1)),
                              *((f"train:epoch@{n}", n) for n in range(1, 8))])
    p = at_failpoint(args, point)
    p.signal(SIGINT)
    t0 = time.monotonic()
    assert p.wait() == 130, p.output
    assert time.monotonic() - t0 < 5
    out = p.output
    assert "Traceback" not in out
    assert f"teacher interrupted: checkpoint of epoch {kept}/8 kept; the rerun resumes from it" in out, (point, out)
    assert "run the same command again to resume" in out
    assert load_checkpoint(cache / "teacher" / "checkpoint.pt")["epoch"] == kept
    g = graph_for(ref.data, cache, **{"teacher.epochs": 8})
    assert g.status("teacher").state == "missing"  # never "fresh" with a half-trained model
    r = invoke(args)
    assert r.exit_code == 0, r.output
    assert f"resuming from epoch {kept}/8" in r.stderr
    epochs = [json.loads(x)["epoch"] for x in (cache / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))
    assert graph_for(ref.data, cache, **{"teacher.epochs": 8}).status("teacher").state == "fresh"


# ----------------------------------------------------------------------------- 3. concurrency

@pytest.mark.slow
def test_second_run_on_a_busy_cache_fails_fast_naming_the_holder_or_waits(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", data=ref.data)  # left to do: baseline, evaluate
    args = [*base_args(ref.data, cache), "run"]
    first = at_failpoint(args, "train:step@1")  # paused inside baseline, holding its lock
    assert "▶ baseline: running" in first.output
    t0 = time.monotonic()
    second = invoke(args)
    line = assert_one_line_error(second, f"cache {cache}: baseline is in use by pid {first.pid}", " run",
                                 "since ", "(writing it)", "--wait")
    assert time.monotonic() - t0 < 10, "fails fast, does not wait by default"
    assert "dlkdd" in line
    first.signal(SIGUSR1)  # the first goes on
    third = invoke([*args, "--wait", "300"])  # waits for the first, then finds everything fresh
    assert first.wait() == 0, first.output
    assert third.exit_code == 0, third.output
    assert "nothing to do" in third.stderr


@pytest.mark.slow
def test_lock_of_a_killed_run_is_taken_over(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("student",), data=ref.data)
    args = [*base_args(ref.data, cache), "student"]
    p = at_failpoint(args, "train:epoch@1")
    p.signal(SIGKILL)
    p.wait()
    holder = json.loads(next((cache / "locks").glob(f"student@{ref.student}.*-{p.pid}-*.json")).read_text())
    assert holder["pid"] == p.pid and "student" in holder["command"] and holder["mode"] == "exclusive"
    r = invoke(args)
    assert r.exit_code == 0, r.output
    assert "resuming from epoch 1/3" in r.stderr
    assert_same_output(ref, cache, "student")


# ----------------------------------------------------------------------------- 2. corruption

def test_flipped_byte_in_a_shard_is_an_error_naming_it_status_stale_and_enhance_rebuilds_it(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    shard = cache / "clips" / "shard-00000.h5"
    offset, size = chunk_offset(shard, "enhanced", 0)
    flip_byte(shard, offset + size // 2, keep_mtime=False)
    clips = ClipDataset.from_index(cache / "clips" / "index.json", None, "enhanced")
    with pytest.raises(ShardError) as e:
        clips[0]
    assert str(shard) in str(e.value) and "checksum" in str(e.value) and "\n" not in str(e.value)
    args = base_args(ref.data, cache)
    states = {s["stage"]: s for s in json.loads(invoke([*args, "status", "--json"]).stdout)["stages"]}
    assert states["enhance"]["state"] == "stale"
    assert "output clips/shard-00000.h5 changed since it was written" in states["enhance"]["reasons"]
    r = invoke([*args, "enhance"])
    assert r.exit_code == 0, r.output
    assert "keeping 5 finished shard(s) of 6; enhancing the other 1" in r.stderr  # only the bad one
    assert_same_shards(ref.cache, cache)
    assert_all_fresh(ref, cache)


def test_same_size_same_mtime_corruption_is_caught_by_verify_and_reading(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    shard = cache / "clips" / "shard-00002.h5"
    offset, size = chunk_offset(shard, "enhanced", 0)
    flip_byte(shard, offset + size // 3, keep_mtime=True)
    args = base_args(ref.data, cache)
    quick = {s["stage"]: s["state"] for s in json.loads(invoke([*args, "status", "--json"]).stdout)["stages"]}
    assert quick["enhance"] == "fresh"  # size and mtime cannot tell...
    verified = {s["stage"]: s for s in
                json.loads(invoke([*args, "status", "--verify", "--json"]).stdout)["stages"]}
    assert verified["enhance"]["state"] == "stale"  # ...the content hash can
    assert ("output clips/shard-00002.h5 corrupted (sha256 differs from the record)"
            in verified["enhance"]["reasons"])
    # Reading it, here in a DataLoader worker process, is one line naming the file.
    r = invoke([*args, "--set", "teacher.num_workers=1", "soft-labels", "--force"])
    assert_one_line_error(r, str(shard), "checksum mismatch")
    r = invoke([*args, "enhance", "--force"])  # the part file's sha256 catches it: only it is redone
    assert r.exit_code == 0 and "keeping 5 finished shard(s) of 6" in r.stderr, r.output
    assert invoke([*args, "soft-labels"]).exit_code == 0
    assert_same_shards(ref.cache, cache)
    assert np.array_equal(logits(cache), logits(ref.cache), equal_nan=True)  # test rows are NaN
    assert_all_fresh(ref, cache)


def test_flipped_byte_in_the_logits_is_an_error_naming_the_file_and_soft_labels_rebuilds(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    path = cache / "soft-labels" / "logits.h5"
    offset, size = chunk_offset(path, "logits", 0)
    flip_byte(path, offset + size // 2, keep_mtime=True)
    with pytest.raises(ShardError, match="unreadable soft labels") as e:
        read_logits(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    args = base_args(ref.data, cache)
    assert_one_line_error(invoke([*args, "student", "--force"]), str(path), "unreadable soft labels")
    os.utime(path)  # as after any write
    states = {s["stage"]: s for s in json.loads(invoke([*args, "status", "--json"]).stdout)["stages"]}
    assert states["soft-labels"]["state"] == "stale"
    assert "output soft-labels/logits.h5 changed since it was written" in states["soft-labels"]["reasons"]
    r = invoke([*args, "student"])  # soft-labels reruns first, then the student (--force emptied it)
    assert r.exit_code == 0, r.output
    assert "▶ soft-labels: running" in r.stderr and "▶ student: running" in r.stderr
    assert np.array_equal(logits(cache), logits(ref.cache), equal_nan=True)  # test rows are NaN
    assert_same_output(ref, cache, "student")


@pytest.mark.parametrize("name", ["model.pt", "checkpoint.pt"])
def test_truncated_teacher_file_is_an_error_naming_it_status_stale_and_teacher_rebuilds(ref, tmp_path, name):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    path = cache / "teacher" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        load_trained(cache / "teacher") if name == "model.pt" else load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: unreadable checkpoint") and "\n" not in str(e.value)
    args = base_args(ref.data, cache)
    states = {s["stage"]: s for s in json.loads(invoke([*args, "status", "--json"]).stdout)["stages"]}
    assert states["teacher"]["state"] == "stale"
    assert f"output teacher/{name} changed since it was written" in states["teacher"]["reasons"]
    r = invoke([*args, "teacher"])
    assert r.exit_code == 0, r.output
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and str(path) in warning[0], r.stderr
    assert ("rewriting it from" if name == "model.pt" else "starting over") in warning[0]
    assert_same_output(ref, cache, "teacher")
    soft_labels = graph_for(ref.data, cache).status("soft-labels")
    if name == "model.pt":  # rewritten from the checkpoint: new bytes, the same tensors: no change
        assert soft_labels.state == "fresh", soft_labels.reasons
    else:  # retrained to the same weights, with this run's timings in model.pt: soft-labels reruns
        assert soft_labels.reasons == ["upstream teacher changed"]
    assert invoke([*args, "soft-labels"]).exit_code == 0
    assert np.array_equal(logits(cache), logits(ref.cache), equal_nan=True)  # test rows are NaN


def test_truncated_student_model_is_a_one_line_error_for_predict_and_export(ref, tmp_path):
    cache = copy_cache(ref.cache, tmp_path / "cache")
    path = cache / "student" / ref.student / "model.pt"
    path.write_bytes(path.read_bytes()[:100])
    args = base_args(ref.data, cache)
    video = next(ref.data.rglob("*.mp4"))
    assert_one_line_error(invoke([*args, "predict", str(video)]), str(path), "unreadable checkpoint")
    assert_one_line_error(invoke([*args, "export", str(tmp_path / "s.pt")]), str(path))
    assert not (tmp_path / "s.pt").exists()


# ----------------------------------------------------------------------------- 5. security

class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_file(path: Path, marker: Path, size: int | None = None) -> Path:
    """A torch file whose unpickling runs code; with `size`, a bare pickle padded to that size."""
    if size is None:
        torch.save({"model": Evil(marker), "epoch": 3, "state_dict": Evil(marker)}, path)
    else:
        blob = pickle.dumps(Evil(marker), protocol=2)
        assert len(blob) <= size
        path.write_bytes(blob + bytes(size - len(blob)))
    return path


def swap_in_place(path: Path, marker: Path) -> None:
    """Replace a cache file by a malicious one of the same size and mtime: status cannot tell."""
    st = path.stat()
    evil_file(path, marker, size=st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_malicious_teacher_checkpoint_is_refused(ref, tmp_path):
    marker = tmp_path / "PWNED"
    cache = copy_cache(ref.cache, tmp_path / "cache")
    path = cache / "teacher" / "model.pt"
    swap_in_place(path, marker)
    with pytest.raises(CheckpointError, match="weights_only refuses"):
        load_trained(cache / "teacher")
    args = base_args(ref.data, cache)
    assert_one_line_error(invoke([*args, "soft-labels", "--force"]), str(path),
                          "needs code execution to load (global posix.system), which weights_only refuses")
    evil_file(path, marker)  # a changed file: teacher is stale, the rerun refuses it and rewrites it
    r = invoke([*args, "teacher"])
    assert r.exit_code == 0 and f"warning: {path}: unreadable checkpoint" in r.stderr, r.output
    assert_same_output(ref, cache, "teacher")
    assert not marker.exists()


def test_malicious_enhancer_weights_in_the_cache_are_refused(ref, tmp_path):
    marker = tmp_path / "PWNED"
    cache = copy_cache(ref.cache, tmp_path / "cache", drop=("enhance",), data=ref.data)
    path = cache / "enhancer" / "weights.pt"
    swap_in_place(path, marker)
    with pytest.raises(Exception, match="weights_only refuses"):
        load_enhancer(path)
    r = invoke([*base_args(ref.data, cache), "enhance"])
    assert_one_line_error(r, str(path), "cannot load enhancer", "weights_only refuses")
    assert not marker.exists()


@pytest.mark.parametrize("setting", ["enhancer", "teacher"])
def test_malicious_weights_to_import_are_refused(ref, tmp_path, setting):
    marker = tmp_path / "PWNED"
    evil = evil_file(tmp_path / "evil.pth", marker)
    if setting == "enhancer":
        cache = tmp_path / "cache"
        extra = ["--set", "enhancer.kind=zero_dce", "--set", "enhancer.mode=import",
                 "--set", f"enhancer.weights={evil}", "enhancer"]
        needle = "weights_only refuses"
    else:
        cache = copy_cache(ref.cache, tmp_path / "cache", drop=("teacher",), data=ref.data)
        extra = ["--set", f"teacher.pretrained={evil}", "teacher"]
        needle = "weights_only refuses"
    assert_one_line_error(invoke([*base_args(ref.data, cache), *extra]), str(evil), needle)
    assert not marker.exists()


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for folder in ("pipeline", "models"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", ok))
            text = path.read_text()
            assert "pickle.load" not in text and "weights_only=False" not in text, path
    # one home: every torch file is read by models/torchfile.safe_load
    assert [c.split(":")[0] for c, ok in calls] == ["models/torchfile.py"] and all(ok for _, ok in calls)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_split_list_paths_cannot_escape_the_dataset_root(ref, tmp_path, kind):
    data = tmp_path / "data"
    shutil.copytree(ref.data, data)
    outside = tmp_path / "outside.mp4"
    shutil.copy(next(ref.data.rglob("*.mp4")), outside)
    rel = {"dotdot": "../outside.mp4", "absolute": str(outside), "symlink": "C0/link.mp4"}[kind]
    if kind == "symlink":
        (data / "C0" / "link.mp4").symlink_to(outside)
    train = data / "splits" / "train.txt"
    train.write_text(train.read_text() + f"9\t0\t{rel}\n")
    r = invoke([*base_args(data, tmp_path / "cache"), "enhance"])
    why = {"dotdot": "escapes the dataset root", "absolute": "absolute path",
           "symlink": "resolves outside the dataset root"}[kind]
    assert_one_line_error(r, f"{train}:5:", why)
    assert not (tmp_path / "cache" / "clips").exists()


@pytest.mark.slow
def test_nothing_is_written_outside_the_cache(ref, tmp_path):
    home, cwd, tmp = tmp_path / "home", tmp_path / "cwd", tmp_path / "tmp"
    for d in (home, cwd, tmp):
        d.mkdir()
    data = tmp_path / "data"
    shutil.copytree(ref.data, data)

    def snapshot(root: Path) -> dict:
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}
    before = {d: snapshot(d) for d in (home, data)}
    env = child_env(HOME=str(home), TMPDIR=str(tmp))
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCH_HOME", "DLKDD_CACHE"):
        env.pop(var, None)
    cache = tmp_path / "cache"
    args = base_args(data, cache, **{"teacher.epochs": 1, "student.epochs": 1})
    for verb in (["run"], ["preview", "--out", "grid.png"], ["export", "student.pt"]):
        rc, out = run_cli([*args, *verb], cwd=cwd, env=env)
        assert rc == 0, out
    assert sorted(p.name for p in cwd.iterdir()) == ["grid.png", "student.pt"]  # only the --out files
    assert snapshot(home) == before[home] == {}  # no font cache, no config, nothing
    assert snapshot(data) == before[data]  # the videos and lists are only read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cwd", "data", "home", "tmp"]
    assert list(tmp.iterdir()) == []
