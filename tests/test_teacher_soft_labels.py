"""The teacher and soft-labels stages on a tiny synthetic clip cache (CPU, seconds)."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from rich.console import Console

from dlkdd.pipeline.config import Config
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.datasets.views import apply_view, normalize, view_params
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.names import LOGITS_FILE
from dlkdd.pipeline.stages import soft_labels, teacher
from dlkdd.pipeline.stages.table import pipeline_graph
from dlkdd.pipeline.training import classifiers
from dlkdd.pipeline.training.checkpoints import load_trained
from tests.cachefix import make_clip_cache

EPOCHS, V = 2, 3


def tiny_config() -> Config:
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, V
    cfg.teacher.model, cfg.teacher.epochs, cfg.teacher.batch_size = "r3d_tiny", EPOCHS, 8
    cfg.soft_labels.batch_size = 4  # several batches, the last one partial
    return cfg


def context(graph: Graph, name: str) -> Context:
    out = graph.out_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    return Context(graph, name, out, "cpu", Console(quiet=True))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with clips, a trained teacher and soft labels: (graph, index, teacher summary, soft summary)."""
    root = tmp_path_factory.mktemp("cache")
    index = make_clip_cache(root / "clips", T=4, H=20, W=24)
    graph = pipeline_graph(tiny_config(), root)
    t_summary = teacher.run_stage(context(graph, "teacher"))
    s_summary = soft_labels.run_stage(context(graph, "soft-labels"))
    return graph, index, t_summary, s_summary


def test_teacher_trains_and_describes_itself(cache):
    graph, index, summary, _ = cache
    out = graph.out_dir("teacher")
    assert (out / "model.pt").exists() and (out / "meta.json").exists()
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    model, meta = load_trained(out)
    assert meta["model"] == "r3d_tiny" and meta["input"] == "enhanced"
    assert meta["classes"] == index["classes"] and meta["num_classes"] == 3
    assert (meta["H"], meta["W"]) == (20, 24)
    assert summary["epochs"] == EPOCHS and summary["epochs_run"] == EPOCHS
    assert summary["params"] > 0 and summary["gflops_per_clip"] > 0
    assert 0 <= summary["best_top1"] <= 100 and 0 <= summary["last_top5"] <= 100
    assert summary["train_clips"] == 18 and summary["val_clips"] == 12


def test_second_run_does_not_retrain(cache):
    graph = cache[0]
    before = torch.load(graph.out_dir("teacher") / "model.pt", weights_only=True)["model"]
    summary = teacher.run_stage(context(graph, "teacher"))
    after = torch.load(graph.out_dir("teacher") / "model.pt", weights_only=True)["model"]
    assert summary["epochs_run"] == 0 and summary["resumed_from"] == EPOCHS
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_view_datasets_for_the_student(cache):
    graph = cache[0]
    logits = np.random.default_rng(0).standard_normal((30, V, 3)).astype(np.float32)
    train_set, val_set = classifiers.view_datasets(context(graph, "student"), "original", seed=1, logits=logits)
    assert len(train_set) == 18 and len(val_set) == 12 and train_set.clips.which == "original"
    windows, y, extra = train_set[5]
    cid = train_set.clips.clip_ids[5]
    assert windows.pixels.dtype == torch.uint8 and windows.pixels.shape == (4, 20, 20, 3)
    assert train_set.view_maker.one(windows).shape == (3, 4, 16, 16)
    assert torch.equal(extra, torch.from_numpy(logits[cid, train_set.view_of(5)]))
    assert val_set.view_of(0) == 0


def test_logits_file_rows_follow_clip_ids(cache):
    graph, index, _, summary = cache
    path = graph.out_dir("soft-labels") / LOGITS_FILE
    with h5py.File(path, "r") as f:
        logits, attrs = f["logits"][...], dict(f.attrs)
        assert f["logits"].fletcher32 and f["logits"].chunks is not None
    n = len(index["clips"])
    assert logits.shape == (n, V, 3) and logits.dtype == np.float32
    assert json.loads(attrs["classes"]) == index["classes"]
    assert (attrs["views"], attrs["crop"], attrs["view_seed"], attrs["clip_ids"]) == (V, 16, 0, n)
    assert attrs["teacher_fingerprint"] == "unknown"  # no teacher record in a hand-run cache
    test = [c["id"] for c in index["clips"] if c["split"] == "test"]
    labelled = [c["id"] for c in index["clips"] if c["split"] != "test"]
    assert summary["clips"] == len(labelled) and summary["views"] == V and summary["classes"] == 3
    assert 0 <= summary["teacher_top1_val_view0"] <= 100
    assert np.isnan(logits[test]).all() and np.isfinite(logits[labelled]).all()  # test clips never labelled
    model, meta = load_trained(graph.out_dir("teacher"))
    clips = ClipDataset.from_index(graph.out_dir("enhance") / "index.json", None, "enhanced")
    last = labelled[-1]
    with torch.inference_mode():
        for c, v in [(0, 0), (7, 2), (last, 1), (last, 0)]:
            clip = clips[c][0]
            x = normalize(apply_view(clip, view_params(c, v, 20, 24, graph.cfg.data), 16), meta["normalize"])
            np.testing.assert_allclose(logits[c, v], model(x[None])[0].numpy(), atol=1e-4, rtol=0)
    clips.close()


def test_verify_passes_then_catches_a_tampered_entry(cache, tmp_path):
    graph, index, _, _ = cache
    n = sum(c["split"] != "test" for c in index["clips"])  # verify checks the labelled entries
    assert soft_labels.verify_cache(graph, "cpu", k=10) == 10
    copy = tmp_path / LOGITS_FILE
    shutil.copy(graph.out_dir("soft-labels") / LOGITS_FILE, copy)
    args = (copy, graph.out_dir("teacher"), graph.out_dir("enhance"), graph.cfg.data)
    assert soft_labels.verify(*args, k=10**6) == n * V
    with h5py.File(copy, "r+") as f:
        f["logits"][11, 2, 1] += 0.01
    with pytest.raises(soft_labels.VerifyError, match=r"entry \(clip 11, view 2\) differs") as err:
        soft_labels.verify(*args, k=n * V)
    assert str(copy) in str(err.value) and "\n" not in str(err.value)


def test_logits_name_their_teacher_and_verify_cache_checks_it(cache, tmp_path):
    graph = pipeline_graph(tiny_config(), tmp_path / "cache")
    shutil.copytree(cache[0].cache, graph.cache)
    graph.record_path("teacher").parent.mkdir(parents=True, exist_ok=True)
    graph.record_path("teacher").write_text(json.dumps({"outputs_digest": "abc"}))
    path = graph.out_dir("soft-labels") / LOGITS_FILE
    soft_labels.run_stage(context(graph, "soft-labels"))
    first = path.read_bytes()
    soft_labels.run_stage(context(graph, "soft-labels"))
    assert path.read_bytes() == first  # same teacher, same clips: same bytes, same output digest
    with h5py.File(path, "r") as f:
        assert f.attrs["teacher_fingerprint"] == "abc"
    assert soft_labels.verify_cache(graph, "cpu", k=3) == 3
    graph.record_path("teacher").write_text(json.dumps({"outputs_digest": "def"}))
    with pytest.raises(soft_labels.VerifyError, match="made by another teacher"):
        soft_labels.verify_cache(graph, "cpu", k=3)
