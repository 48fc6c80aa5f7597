"""The validation split, the test split kept for `evaluate` alone, keep = best on validation,
and the train statistics that travel with each model (issue 10 items 1, 2)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from rich.console import Console

from dlkdd.pipeline.config import Config, ConfigError, DataConfig, build_config
from dlkdd.pipeline.datasets.clips import ViewDataset
from dlkdd.pipeline.datasets.index import DatasetError, held_out_count
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.datasets.splits import read_dataset
from dlkdd.pipeline.datasets.views import normalize
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.inference.predict import export_student
from dlkdd.pipeline.stages import evaluate, soft_labels, student, teacher
from dlkdd.pipeline.stages.table import pipeline_graph
from dlkdd.pipeline.training.checkpoints import load_checkpoint, load_trained
from dlkdd.pipeline.training.loop import evaluate as evaluate_split
from tests.cachefix import make_clip_cache

CLASSES = {"Drink": 9, "Jump": 5, "Pour": 2, "Run": 1}  # train videos per class; uneven on purpose


def _dataset(root, order_seed: int = 0):
    """An ARID-format dataset of placeholder files; the train list's line order is shuffled."""
    lines, label = [], 0
    for label, (cls, n) in enumerate(CLASSES.items()):
        for k in range(n + 2):
            rel = f"{cls}/{cls}_{k}.mp4"
            (root / cls).mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x")
            lines.append((k >= n, f"{label}\t{rel}"))
    train = [t for is_test, t in lines if not is_test]
    random.Random(order_seed).shuffle(train)
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits/train.txt").write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(train)))
    (root / "splits/test.txt").write_text("".join(f"{i}\t{t}\n" for i, (is_test, t) in enumerate(lines)
                                                  if is_test))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_validation_split_is_stratified_stable_and_disjoint(tmp_path):
    a = read_dataset(DataConfig(val_fraction=0.3), _dataset(tmp_path / "a"))
    b = read_dataset(DataConfig(val_fraction=0.3), _dataset(tmp_path / "b", order_seed=1))  # moved, reordered
    rels = lambda entries: sorted(e.rel for e in entries)  # noqa: E731
    assert rels(a.val) == rels(b.val) and rels(a.train) == rels(b.train)  # stable: a hash of the relative path
    for label, n in enumerate(CLASSES.values()):  # stratified: round(n * f) of each class (0 for one video)
        assert sum(e.label == label for e in a.val) == held_out_count(n, 0.3)
    assert {e.split for e in a.val} == {"val"} and a.val
    train, val, test = (set(rels(x)) for x in (a.train, a.val, a.test))
    assert not train & val and not val & test and not train & test
    assert len(train) + len(val) == sum(CLASSES.values())
    assert read_dataset(DataConfig(val_fraction=0.0), tmp_path / "a").val == []


def test_explicit_validation_list_and_refusing_to_select_on_test(tmp_path):
    root = _dataset(tmp_path)
    (root / "splits/val.txt").write_text("0\t0\tDrink/Drink_3.mp4\n1\t1\tJump/Jump_0.mp4\n")
    index = read_dataset(DataConfig(val_list="splits/val.txt"), root)
    assert sorted(e.rel for e in index.val) == ["Drink/Drink_3.mp4", "Jump/Jump_0.mp4"]
    assert "Drink/Drink_3.mp4" not in {e.rel for e in index.train}
    (root / "splits/val.txt").write_text("0\t0\tDrink/Drink_9.mp4\n")  # a test video
    with pytest.raises(DatasetError, match=r"val.txt:1: Drink/Drink_9.mp4 is in the test split") as err:
        read_dataset(DataConfig(val_list="splits/val.txt"), root)
    assert "\n" not in str(err.value)
    for section in ("teacher", "student"):
        with pytest.raises(ConfigError, match=f"{section}.keep = best: the validation split is empty"):
            build_config(overrides=["data.val_fraction=0", f"{section}.keep=best"])


def _tiny_config(**student) -> Config:
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, 2
    for section in (cfg.teacher, cfg.student):
        section.model, section.epochs, section.batch_size = "r3d_tiny", 2, 8
    for k, v in student.items():
        setattr(cfg.student, k, v)
    return cfg


def _ctx(graph: Graph, name: str) -> Context:
    out = graph.out_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    return Context(graph, name, out, "cpu", Console(quiet=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Teacher, soft labels, baseline and student trained on a tiny cache while every clip read
    is recorded with its split: (graph, index, splits read before evaluate, after)."""
    root = tmp_path_factory.mktemp("cache")
    index = make_clip_cache(root / "clips", T=4, H=20, W=24, train_clips=2)
    split_of = {(str(root / "clips" / c["shard"]), c["row"]): c["split"] for c in index["clips"]}
    read: list[str] = []
    original = ClipDataset.__getitem__

    def recording(self, i):
        read.append(split_of[self.rows[i]])
        return original(self, i)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClipDataset, "__getitem__", recording)
        graph = pipeline_graph(_tiny_config(keep="best"), root)
        teacher.run_stage(_ctx(graph, "teacher"))
        soft_labels.run_stage(_ctx(graph, "soft-labels"))
        student.run_baseline(_ctx(graph, "baseline"))
        student.run_student(_ctx(graph, "student"))
        before = list(read)
        evaluate.run_stage(_ctx(graph, "evaluate"))
        after = read[len(before):]
    return graph, index, before, after


@pytest.mark.slow
def test_the_test_split_is_read_by_evaluate_alone(trained):
    _, _, before, after = trained
    assert set(before) == {"train", "val"}  # teacher, soft labels, baseline and student never read test
    assert "test" in after  # ... and the instrument does see test reads when evaluate makes them


@pytest.mark.slow
def test_keep_best_selects_the_epoch_on_validation(trained):
    graph, _, _, _ = trained
    folder = graph.out_dir("student")
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    kept = load_checkpoint(folder / "model.pt")
    best = max(rows, key=lambda r: r["val_top1"])
    assert kept["epoch"] == best["epoch"]
    model, meta = load_trained(folder)
    index = graph.out_dir("enhance") / "index.json"
    val = ViewDataset(ClipDataset.from_index(index, "val", "original"), graph.cfg.data, view=0,
                      stats=meta["normalize"])
    assert evaluate_split(model, val, 8)["top1"] == pytest.approx(best["val_top1"])  # scored on validation


@pytest.mark.slow
def test_train_statistics_travel_into_meta_json_and_export(trained, tmp_path):
    graph, index, _, _ = trained
    stats = index["normalize"]
    train = [c for c in index["clips"] if c["split"] == "train"]
    clips = ClipDataset.from_index(graph.out_dir("enhance") / "index.json", "train", "original")
    pixels = np.stack([clips[i][0].numpy() for i in range(len(clips))]).reshape(-1, 3) / 255.0
    assert len(clips) == len(train)
    np.testing.assert_allclose(stats["original"]["mean"], pixels.mean(0), atol=1e-5)  # over TRAIN clips
    np.testing.assert_allclose(stats["original"]["std"], pixels.std(0), atol=1e-5)
    assert load_trained(graph.out_dir("teacher"))[1]["normalize"] == stats["enhanced"]
    for name in ("baseline", "student"):
        assert load_trained(graph.out_dir(name))[1]["normalize"] == stats["original"]
    model, meta = load_trained(graph.out_dir("student"))
    scripted = torch.jit.load(str(export_student(graph.out_dir("student"), tmp_path / "s.ts")))
    x = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), model(normalize(x, meta["normalize"])), atol=1e-5, rtol=0)
