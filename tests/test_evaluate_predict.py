"""The evaluate stage (Table 1, per-class, confusion, plots), predict and export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

import dlkdd
from dlkdd import models
from dlkdd.pipeline.config import Config, DataConfig
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.datasets.views import apply_view, multi_view_crops
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.inference.predict import check_export, export_student, predict_videos, read_export_meta
from dlkdd.pipeline.names import METRICS, MODEL
from dlkdd.pipeline.stages import evaluate as ev
from dlkdd.pipeline.stages.evaluate import run_stage
from dlkdd.pipeline.stages.results_page import ROWS, format_table
from dlkdd.pipeline.stages.table import pipeline_graph
from dlkdd.pipeline.training.checkpoints import write_meta
from tests.cachefix import make_clip_cache
from tests.videofix import write_video

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
TABLE1 = ("Model", "Method", "Training input", "Inference input", "Top-1", "Top-5", "Top-1 (multi)",
          "Top-5 (multi)")


def fake_trained(out: Path, name: str, classes: list[str], data_cfg, H: int, W: int, input: str,
                 seed: int = 0, extra: dict | None = None) -> torch.nn.Module:
    """A model folder as train() + write_meta leave it, without training."""
    torch.manual_seed(seed)
    model = models.build(name, len(classes)).eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": {}, "fingerprint": "x", "epoch": 1, "metrics": {}},
               out / MODEL)
    write_meta(out, model_name=name, num_classes=len(classes), classes=classes, input=input,
               data_cfg=data_cfg, H=H, W=W, extra=extra)
    rows = [{"epoch": e, "lr": 0.01, "train_loss": 1.5 - 0.3 * e, "train_acc": 30.0 * e, "val_loss": 1.2,
             "val_top1": 25.0 * e, "val_top5": 100.0} for e in (1, 2)]
    (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model


def small_config() -> Config:
    cfg = Config()
    cfg.data.crop, cfg.data.frames, cfg.data.views, cfg.data.short_side = 16, 4, 3, 20
    cfg.data.test_clips = 2
    cfg.evaluate.crops, cfg.evaluate.batch_size = 3, 8
    return cfg


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = small_config()
    graph = pipeline_graph(cfg, root)
    index = make_clip_cache(graph.out_dir("enhance"), classes=3, T=4, H=20, W=24, test_clips=2)
    classes = index["classes"]
    fake_trained(graph.out_dir("teacher"), "r3d_tiny", classes, cfg.data, 20, 24, "enhanced", seed=1)
    fake_trained(graph.out_dir("baseline"), "r3d_tiny", classes, cfg.data, 20, 24, "original", seed=2,
                 extra={"alpha": 0.0, "temperature": None, "variant": "baseline"})
    student = fake_trained(graph.out_dir("student"), "r3d_tiny", classes, cfg.data, 20, 24, "original",
                           seed=3, extra={"alpha": 0.5, "temperature": 4.0,
                                          "variant": graph.out_dir("student").name})
    out = graph.out_dir("evaluate")
    out.mkdir(parents=True)
    summary = run_stage(Context(graph, "evaluate", out, "cpu", Console(quiet=True)))
    results = json.loads((out / "results.json").read_text())
    return {"graph": graph, "out": out, "summary": summary, "results": results, "student": student,
            "index": index}


def test_results_json(evaluated):
    r, index = evaluated["results"], evaluated["index"]
    n_videos = len({c["video"] for c in index["clips"] if c["split"] == "test"})
    assert r["videos"] == n_videos == 6 and r["classes"] == ["C0", "C1", "C2"]
    assert r["student_params"]["alpha"] == 0.5 and r["student_params"]["temperature"] == 4.0
    assert r["student_params"]["variant"] == evaluated["graph"].out_dir("student").name
    for row in ROWS:
        res = r[row]
        for k in ("top1", "top5", "top1_multi", "top5_multi"):
            assert 0.0 <= res[k] <= 100.0
        assert res["top5"] >= res["top1"] and res["top5_multi"] >= res["top1_multi"]
        assert res["top5"] == 100.0  # 3 classes: the label is always among the top 5
        conf = np.array(res["confusion"])
        assert conf.shape == (3, 3) and conf.sum() == n_videos
        assert np.isclose(100.0 * np.trace(conf) / n_videos, res["top1_multi"])
        assert len(res["per_class"]) == 3 and res["model"] == "r3d_tiny" and res["params"] > 0
    assert r["teacher"]["inference_input"] == "enhanced" and r["teacher_on_original"]["inference_input"] == "original"
    assert r["teacher"]["train_input"] == r["teacher_on_original"]["train_input"] == "enhanced"
    assert r["student"]["train_input"].startswith("original") and "soft" in r["student"]["train_input"]
    s = evaluated["summary"]
    assert set(ROWS) <= set(s) and s["student"]["top1"] == r["student"]["top1"]


def test_report_files(evaluated):
    out = evaluated["out"]
    md = (out / "results.md").read_text()
    first = md.split("\n## ", 1)[0]
    lines = first.splitlines()
    assert lines[0].startswith("# ")
    table = [l for l in lines if l.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:8] == list(TABLE1)
    assert len(table) == 2 + 5  # header, rule, five rows (the teacher on original clips with two statistics)
    assert "| r3d_tiny | teacher | enhanced | enhanced |" in first
    assert "| r3d_tiny | teacher | enhanced | original (teacher's statistics) |" in first
    assert "| r3d_tiny | teacher | enhanced | original (original stream's statistics) |" in first
    assert "| r3d_tiny | baseline (CE) | original | original |" in first
    assert "| r3d_tiny | DL-KDD (alpha=0.5, T=4) | original (+ teacher soft labels) | original |" in first
    heads = [l for l in md.splitlines() if l.startswith("## ")]
    assert heads == ["## Per-class accuracy", "## Confusion matrix (student, multi-view)", "## Training curves",
                     "## Notes"]
    assert "(curves.png)" in md and "(confusion.png)" in md
    # every figure names its split: the tables are the test split, the curves the validation split
    assert lines[0] == "# DL-KDD results (test split)"
    curves = md.split("## Training curves", 1)[1].split("## Notes", 1)[0]
    assert "is the validation split" in curves and "test split" in curves and "is the test split" not in md
    for name in ("curves.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert not list(out.glob("*.tmp"))
    assert format_table(evaluated["results"]) in md


def test_student_row_matches_manual_computation(evaluated):
    """Multi-view = softmax averaged over every clip of the video x 3 crops; single = clip 0, centre."""
    graph, model, r = evaluated["graph"], evaluated["student"], evaluated["results"]["student"]
    clips = ClipDataset.from_index(graph.out_dir("enhance") / "index.json", "test", "original")
    rows = [c for c in evaluated["index"]["clips"] if c["split"] == "test"]
    crops = multi_view_crops(20, 24, 3)
    probs, single, labels = {}, {}, {}
    with torch.no_grad():
        for i, c in enumerate(rows):
            clip = clips[i][0]
            x = torch.stack([apply_view(clip, v, 16) for v in crops])
            p = torch.softmax(model(x), 1)
            probs.setdefault(c["video"], []).append(p)
            labels[c["video"]] = c["label"]
            if c["clip"] == 0:
                centre = apply_view(clip, multi_view_crops(20, 24, 1)[0], 16)[None]
                single[c["video"]] = torch.softmax(model(centre), 1)[0]
    videos = list(probs)
    multi = torch.stack([torch.cat(probs[v]).mean(0) for v in videos])
    assert all(len(probs[v]) == 2 for v in videos)
    y = torch.tensor([labels[v] for v in videos])
    conf = np.zeros((3, 3), int)
    for t, p in zip(y.tolist(), multi.argmax(1).tolist()):
        conf[t, p] += 1
    assert conf.tolist() == r["confusion"]
    s1 = torch.stack([single[v] for v in videos]).argmax(1)
    assert r["top1"] == pytest.approx(100.0 * float((s1 == y).float().mean()))
    assert r["top1_multi"] == pytest.approx(100.0 * float((multi.argmax(1) == y).float().mean()))


def test_multi_view_averages_over_clips(evaluated, monkeypatch):
    """Designed probabilities: clip 0's centre crop says class 0, the video's average says its label."""
    clips = ClipDataset.from_index(evaluated["graph"].out_dir("enhance") / "index.json", "test", "original")
    split = ev.test_split(evaluated["graph"].out_dir("enhance") / "index.json")
    assert len(split.videos) == 6 and list(np.bincount(split.clip_video)) == [2] * 6
    rows = [c for c in evaluated["index"]["clips"] if c["split"] == "test"]
    probs = np.zeros((len(rows), 3, 3), np.float32)
    for i, c in enumerate(rows):
        y = c["label"]
        if c["clip"] == 0:
            probs[i, :, :] = [0.6 if k == 0 else 0.2 for k in range(3)]  # all crops say class 0 weakly
        else:
            probs[i, :, y] = 0.9  # the other clip is sure of the label
            probs[i, :, [k for k in range(3) if k != y]] = 0.05
    monkeypatch.setattr(ev, "crop_probabilities", lambda *a, **k: probs)
    scores = ev.evaluate_model(None, clips, split, 16, 3, 8, "cpu")
    assert scores["top1"] == pytest.approx(100.0 / 3)  # single view: right only for class-0 videos
    assert scores["top1_multi"] == 100.0
    assert scores["per_class"] == [100.0, 100.0, 100.0]
    assert np.array(scores["confusion"]).tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


# ---------------------------------------------------------------------------------- predict / export

CLASSES6 = [f"action{k}" for k in range(6)]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "a0.5-T4-x"
    data = DataConfig(frames=4, short_side=32, crop=16)
    fake_trained(out, "r3d_tiny", CLASSES6, data, 32, 32, "original", seed=5,
                 extra={"alpha": 0.5, "temperature": 4.0, "variant": out.name})
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    square = write_video(root / "square.mp4", rng.integers(0, 40, (20, 64, 64, 3)).astype(np.uint8))
    wide = write_video(root / "wide.mp4", rng.integers(0, 40, (20, 48, 64, 3)).astype(np.uint8))
    bad = root / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    return {"square": square, "wide": wide, "bad": bad}


def test_predict_top5(student_dir, videos):
    res = predict_videos(student_dir, [str(videos["square"]), str(videos["wide"]), str(videos["bad"])])
    assert [r["video"] for r in res] == [str(videos[k]) for k in ("square", "wide", "bad")]
    for r in res[:2]:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert 0.0 < sum(probs) <= 1.0 + 1e-6
        assert {t["class"] for t in r["top"]} <= set(CLASSES6)
    assert "top" not in res[2] and res[2]["error"] and "broken.mp4" not in res[2]["error"]
    one = predict_videos(student_dir, [videos["square"]], clips=1, crops=1, topk=2)[0]
    assert len(one["top"]) == 2


def _run(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_predict_never_imports_the_enhancer(student_dir, videos):
    code = (f"import sys; sys.path.insert(0, {str(Path(dlkdd.__file__).parents[1])!r})\n"
            "from dlkdd.pipeline.inference.predict import predict_videos\n"
            f"r = predict_videos({str(student_dir)!r}, [{str(videos['square'])!r}])\n"
            "assert 'top' in r[0], r\n"
            "bad = [m for m in ('dlkdd.pipeline.enhancers.build', 'dlkdd.models.zero_dce',"
            " 'dlkdd.pipeline.stages.enhance') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    assert _run(code, REPO).strip() == "ok"


def test_export_runs_without_the_package(student_dir, tmp_path):
    out = export_student(student_dir, tmp_path / "student.ts")
    assert out == tmp_path / "student.ts" and out.exists() and not list(tmp_path.glob("*.tmp"))
    x = torch.rand(3, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    code = ("import json, sys, torch\n"
            "files = {'meta.json': ''}\n"
            f"m = torch.jit.load({str(out)!r}, _extra_files=files)\n"
            f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
            "with torch.no_grad():\n"
            f"    torch.save(m(x), {str(tmp_path / 'y.pt')!r})\n"
            "text = files['meta.json']\n"
            "print(text.decode() if isinstance(text, bytes) else text)\n"
            "loaded = [n for n in sys.modules if n.split('.')[0] in ('pipeline', 'models')]\n"
            "assert not loaded, loaded\n")
    meta = json.loads(_run(code, tmp_path))
    assert meta["classes"] == CLASSES6 and meta["input"]["shape"] == [-1, 3, 4, 16, 16]
    assert read_export_meta(out) == meta
    model = fake_trained(tmp_path / "again", "r3d_tiny", CLASSES6, DataConfig(frames=4, short_side=32, crop=16),
                         32, 32, "original", seed=5)
    with torch.no_grad():
        want = model(x)
    assert (torch.load(tmp_path / "y.pt") - want).abs().max() < 1e-5
    assert check_export(out, model, x) < 1e-5


def test_export_bert_head(tmp_path):
    folder = tmp_path / "bert"
    model = fake_trained(folder, "r2plus1d_small_bert", ["a", "b", "c"],
                         DataConfig(frames=4, short_side=16, crop=16), 16, 16, "original")
    out = export_student(folder, tmp_path / "bert.ts")
    x = torch.rand(2, 3, 4, 16, 16)
    assert check_export(out, model, x) < 1e-5
    assert read_export_meta(out)["model"] == "r2plus1d_small_bert"


@pytest.mark.slow
def test_predict_gives_a_test_video_the_probabilities_evaluate_gives_it(tmp_path):
    """One definition of the test views (`views.test_views`): `dlkdd predict` on a test video, at the
    config's data.test_clips x evaluate.crops (side evaluate.crop_scale), averages the same softmax
    that `evaluate` averages for it from the cache. Square frames: the three crops differ there too."""
    from relfix import base_args, invoke
    from videofix import make_video_dataset

    from dlkdd.pipeline.datasets.shards import ClipDataset
    from dlkdd.pipeline.stages.evaluate import evaluate_model, test_split
    from dlkdd.pipeline.training.checkpoints import load_trained

    data = make_video_dataset(tmp_path / "data", classes=2, train=2, test=2, frames=12, h=32, w=32)
    cache = tmp_path / "cache"
    r = invoke([*base_args(data, cache, **{"enhancer.kind": "gamma", "enhance.workers": 0, "data.frames": 4,
                                           "data.short_side": 32, "data.crop": 16}), "enhance"])
    assert r.exit_code == 0, r.output
    index_path = cache / "clips" / "index.json"
    index = json.loads(index_path.read_text())
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop = 4, 32, 16
    student = cache / "student" / "x"
    fake_trained(student, "r3d_tiny", index["classes"], cfg.data, index["H"], index["W"], "original", seed=7)
    model, meta = load_trained(student, "cpu")
    split = test_split(index_path)
    clips = ClipDataset.from_index(index_path, "test", "original")
    try:
        scores = evaluate_model(model, clips, split, 16, cfg.evaluate.crops, 8, "cpu", meta.get("normalize"),
                                cfg.evaluate.crop_scale)
    finally:
        clips.close()
    views = multi_view_crops(index["H"], index["W"], cfg.evaluate.crops, scale=cfg.evaluate.crop_scale)
    assert index["H"] == index["W"] and len(set(views)) == cfg.evaluate.crops  # square, and the crops differ
    K = len(index["classes"])
    per_video = {c["video"] for c in index["clips"] if c["split"] == "test"}
    test_clips = sum(c["split"] == "test" for c in index["clips"]) // len(per_video)  # as the cache was cut
    predicted = predict_videos(student, [str(data / v) for v in split.videos], clips=test_clips,
                               crops=cfg.evaluate.crops, topk=K, scale=cfg.evaluate.crop_scale)
    for row, expected in zip(predicted, scores["video_probs"]):
        got = {t["class"]: t["prob"] for t in row["top"]}
        assert np.allclose([got[c] for c in index["classes"]], expected, atol=1e-5), (row, expected)
