"""The enhance stage: shards match the index, broken videos are reported, resume equals a clean run."""
import hashlib
import json
import shutil
import sys
import time
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
from distributed import Client, LocalCluster
from rich.console import Console
from videofix import make_video_dataset

from dlkdd.pipeline.config import Config, EnhancerConfig, set_value
from dlkdd.pipeline.datasets.moments import channel_moments
from dlkdd.pipeline.datasets.shard_parts import Job, ShardWriter
from dlkdd.pipeline.datasets.shards import read_clip
from dlkdd.pipeline.datasets.splits import SAMPLE, dataset_root
from dlkdd.pipeline.engine.run import execute
from dlkdd.pipeline.enhancers.build import make_enhancer, save_enhancer
from dlkdd.pipeline.stages.enhancing import cluster, local, plan
from dlkdd.pipeline.stages.enhancing.plan import EnhanceError
from dlkdd.pipeline.stages.enhancing.task import decode_videos, process_videos
from dlkdd.pipeline.stages.table import pipeline_graph


def small_config(root: Path, **overrides) -> Config:
    cfg = Config()
    values = {"data.root": str(root), "data.frames": 6, "data.short_side": 32, "data.crop": 24,
              "data.test_clips": 2, "enhancer.kind": "gamma", "enhance.workers": 0, "enhance.shard_size": 4}
    values.update(overrides)
    for k, v in values.items():
        set_value(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_video_dataset(tmp_path_factory.mktemp("videos"), classes=2, train=3, test=1, frames=10)


# The default enhancer, briefly fitted: float convolutions where gamma is a lookup table, so the
# byte-identity of shards across resumes, batching and processes is tested where it could break.
KINDS = {"gamma": {}, "zero_dce++": {"enhancer.kind": "zero_dce++", "enhancer.steps": 3, "enhancer.crop": 16}}


def run(cfg, cache, target="enhance", **kw):
    return execute(pipeline_graph(cfg, cache), target, "cpu", Console(quiet=True), **kw)


def test_shards_hold_what_the_index_says(videos, tmp_path):
    cfg = small_config(videos)
    assert run(cfg, tmp_path) == ["enhancer", "enhance"]
    index = json.loads((tmp_path / "clips" / "index.json").read_text())
    assert (index["T"], index["H"], index["W"]) == (6, 32, 43)
    assert index["classes"] == ["C0", "C1"]
    clips = index["clips"]
    assert [c["id"] for c in clips] == list(range(len(clips)))
    # per class 3 listed train videos: 2 train x 2 clips + 1 validation x 2 clips; 1 test video x 2 clips
    assert len(clips) == 2 * (2 * 2 + 1 * 2 + 1 * 2)
    assert sorted({c["split"] for c in clips}) == ["test", "train", "val"]
    assert [c["split"] for c in clips] == ["train"] * 8 + ["val"] * 4 + ["test"] * 4  # train, val, test
    videos = {split: {c["video"] for c in clips if c["split"] == split} for split in ("train", "val")}
    assert len(videos["train"]) == 4 and len(videos["val"]) == 2 and not videos["train"] & videos["val"]
    assert set(index["normalize"]) == {"original", "enhanced"}
    assert index["normalize"]["enhanced"]["mean"][0] > 2 * index["normalize"]["original"]["mean"][0]
    for c in clips:
        orig, enh = read_clip(tmp_path / "clips" / c["shard"], c["row"], "both")
        assert orig.shape == (6, 32, 43, 3) and enh.dtype == np.uint8
        assert abs(orig.mean() / 255 - c["mean_original"]) < 1e-4
        assert enh.mean() > 2 * orig.mean()  # gamma brightens
        with h5py.File(tmp_path / "clips" / c["shard"], "r") as f:
            assert f["video"][c["row"]].decode() == c["video"]
            assert f["label"][c["row"]] == c["label"]
            assert list(f["frames"][c["row"]]) == c["frames"]
    test = [c for c in clips if c["split"] == "test"]
    assert {c["clip"] for c in test} == {0, 1} and test[0]["frames"] != test[1]["frames"]
    assert json.loads((tmp_path / "clips" / "errors.json").read_text()) == []
    assert run(cfg, tmp_path) == []  # fresh: nothing reruns


def test_broken_videos_are_reported_and_the_rest_complete(videos, tmp_path):
    root = tmp_path / "data"
    make_video_dataset(root, classes=2, train=3, test=1, frames=10)
    (root / "C0" / "C0_1.mp4").write_bytes(b"")  # zero bytes
    (root / "C1" / "C1_0.mp4").write_text("not a video at all\n")
    good = (root / "C1" / "C1_2.mp4").read_bytes()
    (root / "C1" / "C1_2.mp4").write_bytes(good[: len(good) // 3])  # truncated
    cache = tmp_path / "cache"
    run(small_config(root), cache)
    errors = json.loads((cache / "clips" / "errors.json").read_text())
    assert sorted(e["video"] for e in errors) == ["C0/C0_1.mp4", "C1/C1_0.mp4", "C1/C1_2.mp4"]
    assert all(e["reason"] and e["path"] in e["reason"] for e in errors)
    index = json.loads((cache / "clips" / "index.json").read_text())
    assert {c["video"] for c in index["clips"]}.isdisjoint(e["video"] for e in errors)
    assert json.loads((cache / "stages" / "enhance.json").read_text())["summary"]["failed"] == 3
    with pytest.raises(EnhanceError, match=r"C0_1.mp4.*--strict"):
        run(small_config(root, **{"enhance.strict": True}), tmp_path / "strict")


def test_no_readable_video_is_a_clear_failure(tmp_path):
    root = make_video_dataset(tmp_path / "data", classes=1, train=1, test=1, frames=8)
    for p in root.rglob("*.mp4"):
        p.write_bytes(b"garbage")
    with pytest.raises(Exception, match="no (training )?video could be read"):
        run(small_config(root), tmp_path / "cache")
    assert not (tmp_path / "cache" / "stages" / "enhance.json").exists()


def _datasets(cache):
    out = {}
    for p in sorted((cache / "clips").glob("shard-*.h5")):
        with h5py.File(p, "r") as f:
            out[p.name] = {k: f[k][...] for k in f}
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_interrupted_then_resumed_equals_uninterrupted(videos, tmp_path, monkeypatch, kind):
    cfg = small_config(videos, **KINDS[kind])
    run(cfg, tmp_path / "clean")
    real_write, calls = ShardWriter.write, []

    def write_then_die(self, i, results):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C / kill arrived after two shards
        calls.append(i)
        real_write(self, i, results)
    monkeypatch.setattr(ShardWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed")
    assert len(list((tmp_path / "resumed" / "clips").glob("shard-*.h5"))) == 2
    assert not (tmp_path / "resumed" / "stages" / "enhance.json").exists()
    monkeypatch.setattr(ShardWriter, "write", real_write)
    made = []
    monkeypatch.setattr(local, "decode_videos", lambda jobs, **kw: made.extend(j.vid for j in jobs) or
                        decode_videos(jobs, **kw))
    run(cfg, tmp_path / "resumed")
    assert len(made) == 8 - 4  # two shards of two videos were kept
    clean, resumed = _datasets(tmp_path / "clean"), _datasets(tmp_path / "resumed")
    assert clean.keys() == resumed.keys() and len(clean) == 4
    for name in clean:
        for k in clean[name]:
            assert np.array_equal(clean[name][k], resumed[name][k]), (name, k)
    for name in clean:  # byte-identical files, not just equal datasets
        assert (tmp_path / "clean" / "clips" / name).read_bytes() == \
               (tmp_path / "resumed" / "clips" / name).read_bytes()
    a = json.loads((tmp_path / "clean" / "clips" / "index.json").read_text())
    b = json.loads((tmp_path / "resumed" / "clips" / "index.json").read_text())
    assert a == b



def test_shards_from_another_config_are_not_reused(videos, tmp_path):
    run(small_config(videos), tmp_path)
    cfg = small_config(videos, **{"data.frames": 4})
    run(cfg, tmp_path)
    index = json.loads((tmp_path / "clips" / "index.json").read_text())
    assert index["T"] == 4
    orig = read_clip(tmp_path / "clips" / index["clips"][0]["shard"], 0, "original")
    assert orig.shape[0] == 4


def test_free_space_is_checked_before_starting(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 1000))
    with pytest.raises(EnhanceError, match=r"not enough free space.*need about .* GB, 0.00 GB free"):
        plan.check_free_space(tmp_path, 100, 16, (64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_dask_local_cluster_gives_the_same_shards(videos, tmp_path, kind, monkeypatch):
    """Every video enhanced on one of two dask worker processes (a scheduler that is up before the
    stage starts gets every task; one video a task), equal to this process's shards."""
    run(small_config(videos, **KINDS[kind], **{"enhance.threads_per_worker": 1}), tmp_path / "inproc")
    monkeypatch.setattr(plan, "TASK_FRAMES", 1)  # one video a task: spread over both workers
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as workers:
        run(small_config(videos, **KINDS[kind], **{"enhance.threads_per_worker": 1}), tmp_path / "dask",
            options={"scheduler": workers.scheduler_address})
        with Client(workers) as client:  # the workers enhanced (this module loads at a task's first frames)
            assert any(client.run(lambda: "dlkdd.pipeline.enhancers.apply" in sys.modules).values())
    a, b = _datasets(tmp_path / "inproc"), _datasets(tmp_path / "dask")
    assert a.keys() == b.keys()
    for name in a:
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k])


@pytest.mark.slow
def test_fitted_zero_dce_pp_brightens_the_cache(videos, tmp_path):
    cfg = small_config(videos, **{"enhancer.kind": "zero_dce++", "enhancer.steps": 40})
    run(cfg, tmp_path)
    rec = json.loads((tmp_path / "stages" / "enhancer.json").read_text())["summary"]
    assert rec["mean_after"] > 3 * rec["mean_before"]
    summary = json.loads((tmp_path / "stages" / "enhance.json").read_text())["summary"]
    assert summary["mean_brightness_after"] > 3 * summary["mean_brightness_before"]


# --- the execution path: tasks of several videos, byte-identical to the per-video code ---------

def _sample_subset(dst: Path, per_split: dict) -> Path:
    """The first videos of each split of the bundled sample (committed bytes: a stable input)."""
    for split, n in per_split.items():
        rows = (SAMPLE / "splits" / f"{split}.txt").read_text().splitlines()[:n]
        for row in rows:
            rel = row.split("\t")[2]
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes((SAMPLE / rel).read_bytes())
        (dst / "splits").mkdir(parents=True, exist_ok=True)
        (dst / "splits" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return dst


# sha256 of the shards that the code on `main` before the batched execution path (eaa940c) wrote
# for this config: gamma is a table lookup, so the bytes depend on the decoder, not on the CPU.
MAIN_SHARDS = {  # recomputed with eaa940c's code on the regenerated sample's videos
    "shard-00000.h5": "144bc295128d357530d797bb1b9c616a739b876cfcc4e3f085c650cf3b6353ce",
    "shard-00001.h5": "190e6f37fb83d31bc5534ee2c9320a076732b9c89b6142343fbe24e79b8d23ba",
    "shard-00002.h5": "57b4f31a4e85bb6a52c2fdcc55b6dae797e39f298616f7971215a23a1d14f154",
    "shard-00003.h5": "b34cc98f3283f1c9f4d597467d14380d461ece0ba1c87002cad1cbc519235d97",
}


def _shard_digests(cache: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((cache / "clips").glob("shard-*.h5"))}


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_shards_are_byte_identical_to_those_of_main(tmp_path, workers):
    root = _sample_subset(tmp_path / "data", {"train": 5, "test": 3})
    # main's clip layout when the digests were recorded: one clip per train video, no validation split
    cfg = small_config(root, **{"data.frames": 8, "data.short_side": 64, "data.crop": 32,
                                "data.clips_per_video": 1, "data.val_fraction": 0.0,
                                "enhance.workers": workers, "enhance.threads_per_worker": 1,
                                "enhance.cluster_after": 0})
    run(cfg, tmp_path / "cache")
    assert _shard_digests(tmp_path / "cache") == MAIN_SHARDS


def test_videos_enhanced_together_equal_videos_enhanced_one_by_one(videos, tmp_path):
    """A task shares enhancer batches across videos; each frame must come out as on its own."""
    ecfg = EnhancerConfig(kind="zero_dce++", seed=3)
    save_enhancer(make_enhancer(ecfg), tmp_path / "weights.pt", ecfg)
    cfg = small_config(videos)
    jobs, _ = plan.list_jobs(cfg.data, dataset_root(cfg))
    args = dict(T=6, clips={"train": 1, "val": 2, "test": 2}, size=plan.clip_size(cfg.data, jobs),
                enhancer_path=str(tmp_path / "weights.pt"), batch_frames=8, device="cpu")
    for threads in (1, 2):
        with local.torch_threads(threads):
            together = process_videos(jobs, **args)
            alone = [r for j in jobs for r in process_videos([j], **args)]
        assert [r["job"] for r in together] == jobs
        for a, b in zip(together, alone):
            assert np.array_equal(a["original"], b["original"])
            assert np.array_equal(a["enhanced"], b["enhanced"]), (threads, a["job"].rel)


def test_tasks_group_consecutive_videos_within_the_bounds():
    jobs = [Job(i, f"v{i}", f"v{i}", "train" if i < 10 else "test", 0) for i in range(14)]
    clips = {"train": 1, "test": 2}
    tasks = plan.task_plan(jobs, 16, clips, (64, 64))
    assert [j for t in tasks for j in t] == jobs
    assert all(sum(clips[j.split] * 16 for j in t) <= plan.TASK_FRAMES for t in tasks)
    assert len(tasks) < len(jobs)  # several videos per task
    big = plan.task_plan(jobs, 16, clips, (2048, 2048))  # one video is over the byte bound: alone
    assert [len(t) for t in big] == [1] * len(jobs)


def test_a_cluster_starts_only_when_the_work_left_outlasts_its_start_up(monkeypatch):
    """`enhance.cluster_after`: tasks run here while the rest would take less than that (at the pace
    of the tasks after the first); the first is not counted (it loads torch and the enhancer)."""
    pace = {"s": 0.0}
    done = []

    def decode(task, **_):
        time.sleep(0.2 if not done else pace["s"])
        done.append(task)
        return task

    monkeypatch.setattr(local, "decode_videos", decode)
    monkeypatch.setattr(local, "enhance_decoded", lambda task, **_: [task])

    def drive(n, after):
        done.clear()
        it = iter(range(n))
        gen = local.until_cluster_pays(it, n, {}, 1, after)
        out = []
        try:
            while True:
                out.append(next(gen))
        except StopIteration as stop:
            return stop.value, out, list(it)

    pace["s"] = 0.01  # 10 tasks of 10 ms: 0.1 s left at most, under 1 s: all here, no cluster
    worth, out, left = drive(12, 1.0)
    assert worth is False and out == list(range(12)) and left == []
    pace["s"] = 0.05  # 50 ms a task, 40 left: 2 s > 1 s -> a cluster after the first two tasks (and
    worth, out, left = drive(42, 1.0)  # the third, decoded ahead meanwhile, finished here)
    assert worth is True and out == [0, 1, 2] and left == list(range(3, 42))


def test_the_default_path_on_a_small_set_never_starts_dask(videos, tmp_path, monkeypatch):
    def no_cluster(*a, **k):
        raise AssertionError("a LocalCluster was started for a few seconds of work")
    monkeypatch.setattr(cluster, "Cluster", no_cluster)
    run(small_config(videos, **{"enhance.workers": 2}), tmp_path / "default")
    assert sorted((tmp_path / "default" / "clips").glob("shard-*.h5"))


def test_channel_moments_are_exact_integer_sums():
    rng = np.random.default_rng(3)
    clip = rng.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8)
    x = clip.reshape(-1, 3).astype(np.int64)
    want = [*(x.sum(0) / (len(x) * 255.0)).tolist(), *((x * x).sum(0) / (len(x) * 255.0 ** 2)).tolist()]
    assert channel_moments(clip) == want
    assert channel_moments(np.full((2, 3, 3, 3), 255, np.uint8)) == [1.0] * 6
