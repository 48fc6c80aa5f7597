"""Inference where the footage is: windows over long videos, folders and lists, the timeline
picture, ONNX export (issue 14)."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlkdd import models
from dlkdd.cli import cli
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.encode import write_long_video
from dlkdd.pipeline.datasets.views import normalize
from dlkdd.pipeline.inference import windows as infer
from dlkdd.pipeline.inference.predict import (
    NormalizedInput,
    export_student,
    load_student,
    read_export_meta,
    video_inputs,
)
from dlkdd.pipeline.names import MODEL
from dlkdd.pipeline.training.checkpoints import write_meta
from tests.videofix import write_video

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
CLASSES = ["Drink", "Jump", "Pick", "Pour", "Push", "Run"]
STATS = {"mean": [0.05, 0.045, 0.04], "std": [0.03, 0.035, 0.025]}  # a model trained on standardised input
DATA = DataConfig(frames=4, short_side=32, crop=16)


def save_student(out: Path, model: torch.nn.Module, stats: dict | None = STATS) -> Path:
    """A student folder as training leaves it (model.pt + meta.json), for `model`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": {}, "fingerprint": "x", "epoch": 1, "metrics": {}},
               out / MODEL)
    extra = {"alpha": 0.5, "temperature": 4.0, "variant": out.name}
    if stats:
        extra["normalize"] = stats
    write_meta(out, model_name="r3d_tiny", num_classes=len(CLASSES), classes=CLASSES, input="original",
               data_cfg=DATA, H=32, W=32, extra=extra)
    return out


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    return save_student(tmp_path_factory.mktemp("student") / "a0.5-T4-x", models.build("r3d_tiny", 6).eval())


@pytest.fixture(scope="module")
def two_actions(tmp_path_factory) -> dict:
    """Drink_1 then Run_1 of the bundled sample, both 15 fps: the class changes where Run_1 starts."""
    out = tmp_path_factory.mktemp("long") / "drink-then-run.mp4"
    info = write_long_video(out, [SAMPLE / "Drink" / "Drink_1.mp4", SAMPLE / "Run" / "Run_1.mp4"])
    change, total, fps = info["parts"][1][1], info["frames"], info["fps"]
    assert fps == 15 and 12 <= change <= total - 12
    return {"path": out, "change": change / fps, "end": total / fps, "frames": total, "first": change,
            "fps": fps}


def count_windows(frames: int, fps: float, window_s: float, stride_s: float) -> int:
    """How many windows plan_windows must cut, written out: windows of w = round(window_s * fps)
    frames start at k * step (step = round(stride_s * fps)); window 0 always exists, and window
    k >= 1 exists when it starts inside the video and window k - 1 stopped short of the end."""
    w, step = round(window_s * fps), round(stride_s * fps)
    k = 1
    while k * step < frames and (k - 1) * step + w < frames:
        k += 1
    return k


def _window_batch(video: np.ndarray, starts, length, labels_of, T=4):
    """Inputs and majority labels of windows [s, s + length) of the decoded video (frames, H, W, 3)."""
    idx = np.stack([infer.window_frames(infer.Window(int(s), int(s) + length), T) for s in starts])
    x = infer.clip_inputs(video[idx], {"H": 32, "W": 32, "crop": 16}, 1)
    y = [int(np.bincount(labels_of[i], minlength=6).argmax()) for i in idx]
    return x, torch.tensor(y)


@pytest.fixture(scope="module")
def knows_both(tmp_path_factory, two_actions) -> Path:
    """A tiny student trained (seeded, a few seconds) on windows of the two-action video, labelled
    by the class of most of their frames: it tells the two apart, so its timeline can be checked."""
    stream = infer.VideoStream(two_actions["path"], 32, (32, 32))
    video = stream.frames(np.arange(stream.num_frames))
    n, first = two_actions["frames"], two_actions["first"]
    assert stream.num_frames == n
    labels_of = np.array([0] * first + [5] * (n - first))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = models.build("r3d_tiny", 6)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(40):
        length = int(rng.integers(3, 13))
        x, y = _window_batch(video, rng.integers(0, n - length + 1, 12), length, labels_of)
        loss = torch.nn.functional.cross_entropy(model(normalize(x, STATS)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_student(tmp_path_factory.mktemp("trained") / "a0.5-T4-y", model.eval())


# ---------------------------------------------------------------------------------- windows

def test_plan_windows_cover_every_frame():
    w = infer.plan_windows(61, 15.0, window_s=0.8, stride_s=0.4)  # 12 frames every 6
    assert [(x.start, x.end) for x in w[:3]] == [(0, 12), (6, 18), (12, 24)]
    assert w[-1].end == 61 and all(b.start - a.start == 6 for a, b in zip(w, w[1:]))
    assert infer.plan_windows(10, 15.0, 2.0, 1.0) == [infer.Window(0, 10)]  # shorter than a window
    gaps = infer.plan_windows(100, 10.0, 1.0, 3.0)  # stride > window: gaps, by request
    assert [(x.start, x.end) for x in gaps] == [(0, 10), (30, 40), (60, 70), (90, 100)]
    with pytest.raises(ValueError):
        infer.plan_windows(0, 15.0, 1.0, 1.0)
    for frames in range(1, 80):  # the arithmetic the tests below count windows with
        for window_s, stride_s in ((0.4, 0.4), (0.8, 0.4), (0.6, 0.2), (1.0, 0.5), (0.4, 1.0)):
            w = infer.plan_windows(frames, 15.0, window_s, stride_s)
            assert len(w) == count_windows(frames, 15.0, window_s, stride_s), (frames, window_s, stride_s)
            assert w[0].start == 0 and w[-1].end == frames or stride_s > window_s


def test_window_frames_stay_inside_their_window():
    idx = infer.window_frames(infer.Window(30, 42), 4)
    assert idx.tolist() == sorted(idx.tolist()) and 30 <= idx.min() and idx.max() < 42 and len(idx) == 4


def test_merge_segments_by_class_and_min_prob():
    rows = [{"start": s, "end": s + 2.0, "class": c, "prob": p}
            for s, c, p in [(0, "A", 0.9), (1, "A", 0.8), (2, "B", 0.4), (3, "B", 0.7), (4, "B", 0.9),
                            (5, "A", 0.6)]]
    segs = infer.merge_segments(rows, 0.5)
    assert [(s["start"], s["end"], s["class"], s["windows"]) for s in segs] == [
        (0.0, 2.5, "A", 2), (3.5, 5.5, "B", 2), (5.5, 7.0, "A", 1)]  # window 2 (0.4) is in none
    assert segs[1]["prob"] == pytest.approx(0.8)
    whole = infer.merge_segments(rows, 0.0)
    assert [(s["start"], s["end"], s["class"]) for s in whole] == [(0.0, 2.5, "A"), (2.5, 5.5, "B"),
                                                                  (5.5, 7.0, "A")]
    assert infer.merge_segments([], 0.5) == []


@pytest.mark.slow  # trains a tiny student for a few seconds
@pytest.mark.parametrize("window,stride", [(0.4, 0.4), (0.8, 0.4), (0.6, 0.2)])
def test_timeline_of_a_class_change_matches_the_truth(knows_both, two_actions, window, stride):
    """Drink then Run: two segments, the boundary within one stride of the true change."""
    res = list(infer.predict_many_windows(knows_both, [str(two_actions["path"])], window, stride, 0.5))[0]
    segs = res["segments"]
    assert [s["class"] for s in segs] == ["Drink", "Run"], [(r["start"], r["class"], r["prob"])
                                                            for r in res["windows"]]
    assert segs[0]["start"] == 0.0 and segs[1]["end"] == pytest.approx(two_actions["end"], abs=1e-3)
    assert abs(segs[0]["end"] - two_actions["change"]) <= stride + 1e-6
    assert segs[0]["end"] == segs[1]["start"]
    assert res["duration"] == pytest.approx(two_actions["end"], abs=1e-3) and res["fps"] == two_actions["fps"]
    assert len(res["windows"]) == count_windows(two_actions["frames"], two_actions["fps"], window, stride)


def test_windows_use_only_the_frames_they_need(untrained, two_actions, monkeypatch):
    """Streaming: every decode call asks for one batch of windows' frames, never the video."""
    asked = []
    real = infer.VideoStream.frames

    def spy(self, indices):
        asked.append(np.asarray(indices))
        return real(self, indices)
    monkeypatch.setattr(infer.VideoStream, "frames", spy)
    res = list(infer.predict_many_windows(untrained, [str(two_actions["path"])], 0.4, 0.4, batch=2))[0]
    n = count_windows(two_actions["frames"], two_actions["fps"], 0.4, 0.4)
    assert n >= 5 and len(res["windows"]) == n and len(asked) == (n + 1) // 2  # batches of 2 windows
    assert max(len(a) for a in asked) == 2 * 4  # batch x T frames
    assert sum(len(a) for a in asked) == n * 4 < two_actions["frames"]  # T frames a window, not the video
    assert all(np.all(np.diff(a) >= 0) for a in asked)


# ---------------------------------------------------------------------------------- folders, lists

@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("footage")
    rng = np.random.default_rng(0)
    write_video(root / "cam1" / "a.mp4", rng.integers(0, 30, (12, 32, 40, 3)).astype(np.uint8))
    write_video(root / "cam2" / "night" / "b.avi", rng.integers(0, 30, (9, 32, 32, 3)).astype(np.uint8),
                codec="mpeg4")
    (root / "cam2" / "broken.mp4").write_bytes(b"not a video at all" * 40)
    (root / "cam2" / "notes.txt").write_text("not a video, not listed")
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "c.mp4", rng.integers(0, 30, (9, 32, 32, 3)).astype(np.uint8))
    return root


def test_collect_videos_recursively_and_from_a_list(folder, tmp_path):
    found = infer.collect_videos([folder])
    assert [os.path.relpath(p, folder) for p in found] == ["cam1/a.mp4", "cam2/broken.mp4",
                                                           "cam2/night/b.avi"]
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my cameras\n{folder / 'cam1' / 'a.mp4'}\n\nmissing.mp4\n")
    assert infer.collect_videos([], lst) == [str(folder / "cam1" / "a.mp4"), str(tmp_path / "missing.mp4")]
    with pytest.raises(infer.InputListError, match="list file not found"):
        infer.collect_videos([], tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(infer.InputListError, match="no videos found"):
        infer.collect_videos([tmp_path / "empty"])


def _cli(args, cache: Path, student: Path):
    """Run `dlkdd predict` in process with the student folder the cache's config points at."""
    from click.testing import CliRunner

    from dlkdd.pipeline.stages.run import resolve_config
    from dlkdd.pipeline.stages.table import pipeline_graph
    target = pipeline_graph(resolve_config(), cache).out_dir("student")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(student, target_is_directory=True)
    return CliRunner().invoke(cli, ["--cache", str(cache), "--device", "cpu", *args])


def test_folder_with_a_broken_file_is_reported_and_skipped(folder, untrained, tmp_path):
    r = _cli(["predict", str(folder), "--json"], tmp_path / "cache", untrained)
    assert r.exit_code == 1
    results = json.loads(r.stdout)
    assert [Path(x["video"]).name for x in results] == ["a.mp4", "broken.mp4", "b.avi"]
    assert "error" in results[1] and "top" in results[0] and "top" in results[2]
    assert "broken.mp4: error:" in r.stderr and "Traceback" not in r.stderr
    w = _cli(["predict", str(folder), "--window", "0.5", "--csv"], tmp_path / "cache", untrained)
    assert w.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(w.stdout)))
    assert {Path(x["video"]).name for x in rows} == {"a.mp4", "broken.mp4", "b.avi"}
    broken = [x for x in rows if x["video"].endswith("broken.mp4")]
    assert len(broken) == 1 and broken[0]["error"] and broken[0]["class"] == ""
    assert all(x["class"] in CLASSES for x in rows if not x["error"])


# ---------------------------------------------------------------------------------- output shapes

def test_json_shape(two_actions, untrained, tmp_path):
    r = _cli(["predict", str(two_actions["path"]), "--window", "0.8", "--stride", "0.4", "--min-prob", "0.1",
              "--json"], tmp_path / "cache", untrained)
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert set(res) == {"video", "fps", "frames", "duration", "window", "stride", "min_prob", "classes",
                        "windows", "segments"}
    n = count_windows(two_actions["frames"], two_actions["fps"], 0.8, 0.4)
    assert res["classes"] == CLASSES and res["frames"] == two_actions["frames"] and len(res["windows"]) == n
    step, win = round(0.4 * two_actions["fps"]), round(0.8 * two_actions["fps"])  # 6 and 12 frames at 15 fps
    assert [w["start"] for w in res["windows"]] == [round(k * step / two_actions["fps"], 3) for k in range(n)]
    assert res["windows"][0]["end"] == round(win / two_actions["fps"], 3)
    assert res["windows"][-1]["end"] == pytest.approx(two_actions["end"], abs=1e-3)
    for w in res["windows"]:
        assert set(w) == {"start", "end", "class", "prob", "runner_up", "runner_up_prob", "probs"}
        assert w["prob"] >= w["runner_up_prob"] and w["class"] != w["runner_up"]
        assert len(w["probs"]) == 6 and sum(w["probs"]) == pytest.approx(1.0, abs=1e-4)
        assert max(w["probs"]) == pytest.approx(w["prob"])
    for s in res["segments"]:
        assert set(s) == {"start", "end", "class", "prob", "windows"}
    assert sum(s["windows"] for s in res["segments"]) == sum(w["prob"] >= 0.1 for w in res["windows"])


def test_csv_shapes(two_actions, untrained, tmp_path):
    video = str(two_actions["path"])
    shapes = {(): ["video", "class", "prob", "runner_up", "runner_up_prob", "error"],
              ("--window", "0.8", "--stride", "0.4"): ["video", "start", "end", "class", "prob", "runner_up",
                                                       "runner_up_prob", "error"],
              ("--window", "0.8", "--min-prob", "0"): ["video", "start", "end", "class", "prob", "windows",
                                                       "error"]}
    counts = {}
    for opts, header in shapes.items():
        r = _cli(["predict", video, *opts, "--csv"], tmp_path / "cache", untrained)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0].split(",") == header
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert all(row["video"] == video and row["class"] in CLASSES and not row["error"] for row in rows)
        counts[opts] = len(rows)
    frames, fps = two_actions["frames"], two_actions["fps"]
    assert counts[()] == 1 and counts[("--window", "0.8", "--stride", "0.4")] == count_windows(frames, fps, 0.8, 0.4)
    # stride = window
    assert 1 <= counts[("--window", "0.8", "--min-prob", "0")] <= count_windows(frames, fps, 0.8, 0.8)


def test_text_timeline_and_usage_errors(two_actions, untrained, tmp_path):
    r = _cli(["predict", str(two_actions["path"]), "--window", "1", "--stride", "0.5"], tmp_path / "c", untrained)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    n = count_windows(two_actions["frames"], two_actions["fps"], 1.0, 0.5)  # 15 frames every 8 at 15 fps
    assert f"{n} windows of 1 s every 0.5 s" in lines[0] and len(lines) == 1 + n
    assert re.match(r"  0:00:00\.0 - 0:00:01\.0  \w+ +0\.\d{3}  \(runner-up \w+ 0\.\d{3}\)", lines[1])
    bad = _cli(["predict", str(two_actions["path"]), "--stride", "0.5"], tmp_path / "c", untrained)
    assert bad.exit_code == 2 and "need --window" in bad.output
    none = _cli(["predict", "--list", str(tmp_path / "missing.txt")], tmp_path / "c", untrained)
    assert none.exit_code == 1 and "list file not found" in none.output and "Traceback" not in none.output


# ---------------------------------------------------------------------------------- the enhancer

def _run(code: str) -> str:
    """`code` in a fresh interpreter (dlkdd importable as in this one), so sys.modules starts empty."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


ENHANCER_MODULES = ("dlkdd.pipeline.enhancers.build", "dlkdd.models.zero_dce", "dlkdd.pipeline.stages.enhance")


def _predict_then_modules(cache, runs) -> str:
    """Code that runs `dlkdd predict` with each argument list in turn, printing after each the
    enhancer modules imported so far."""
    return (f"from click.testing import CliRunner\nfrom dlkdd.cli import cli\n"
            f"for args in {list(runs)!r}:\n"
            f"    r = CliRunner().invoke(cli, ['--cache', {str(cache)!r}, '--device', 'cpu', "
            f"'--set', 'enhancer.kind=gamma', 'predict', *args])\n"
            f"    assert r.exit_code == 0, r.output\n"
            f"    print([m for m in {ENHANCER_MODULES!r} if m in sys.modules])\n")


@pytest.mark.slow
def test_enhancer_is_loaded_only_for_timeline_thumbnails(two_actions, untrained, tmp_path):
    """The prediction path is the student alone; only --timeline's thumbnails bring in the enhancer."""
    from dlkdd.pipeline.stages.run import resolve_config
    from dlkdd.pipeline.stages.table import pipeline_graph
    video = str(two_actions["path"])
    cache = tmp_path / "cache"
    student = pipeline_graph(resolve_config(None, ["enhancer.kind=gamma"]), cache).out_dir("student")
    student.parent.mkdir(parents=True)
    student.symlink_to(untrained, target_is_directory=True)
    png = tmp_path / "t.png"
    runs = ([video], [video, "--window", "0.5", "--json"], [video, "--window", "0.5", "--csv"],
            [str(two_actions["path"].parent), "--window", "1", "--min-prob", "0.3"],
            [video, "--window", "0.5", "--timeline", str(png)])
    printed = _run(_predict_then_modules(cache, runs)).strip().splitlines()
    assert printed[:4] == ["[]"] * 4
    assert "dlkdd.pipeline.enhancers.build" in printed[4] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- timeline picture

def test_timeline_picture(untrained, two_actions, tmp_path):
    from dlkdd.pipeline.inference.timeline import curve_classes, save_timeline
    res = list(infer.predict_many_windows(untrained, [str(two_actions["path"])], 0.8, 0.4, 0.5, thumbnails=5))[0]
    thumbs = res["_thumbnails"]
    assert len(thumbs) == 5 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in thumbs.values())
    bright = {k: np.clip(f.astype(int) * 8, 0, 255).astype(np.uint8) for k, f in thumbs.items()}
    out = save_timeline(res, tmp_path / "timeline.png", bright)
    import matplotlib.image as mpimg
    img = mpimg.imread(out)
    assert img.shape[1] == 1000 and img.shape[0] == 460 and not list(tmp_path.glob("*.tmp"))
    probs = np.array([w["probs"] for w in res["windows"]])
    assert set(probs.argmax(1).tolist()) <= set(curve_classes(probs))
    assert len(curve_classes(np.random.rand(3, 20))) == 8
    assert infer.timeline_paths(Path("t.png"), ["x/a.mp4", "y/a.mp4", "b.avi"]) == [
        Path("t-a.png"), Path("t-a-2.png"), Path("t-b.png")]


# ---------------------------------------------------------------------------------- export

def test_normalisation_travels_with_the_model(untrained):
    """predict feeds pixel / 255 to a wrapper that standardises inside, through views.normalize."""
    model, meta = load_student(untrained)
    assert isinstance(model, NormalizedInput) and meta["normalize"] == STATS
    x = torch.rand(2, 3, 4, 16, 16)
    with torch.no_grad():
        want = model.model(normalize(x, STATS))
        assert torch.equal(model(x), want) and not torch.allclose(model.model(x), want)


def test_torchscript_export_bakes_in_normalisation(untrained, tmp_path):
    out = export_student(untrained, tmp_path / "s.pt")
    meta = read_export_meta(out)
    assert meta["normalize"] == STATS and "inside the model" in meta["input"]["normalization"]
    model, _ = load_student(untrained)
    loaded = torch.jit.load(str(out))
    x = torch.rand(3, 3, 6, 16, 16)  # another batch and T than the export's example
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-5


def test_onnx_export_matches_pytorch_on_sample_clips(untrained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from dlkdd.pipeline.inference.export import export_onnx, read_onnx_metadata
    out = export_onnx(untrained, tmp_path / "student.onnx")
    assert out.exists() and not list(tmp_path.glob("*.tmp"))
    meta = read_onnx_metadata(out)
    assert meta["classes"] == CLASSES and meta["normalize"] == STATS
    assert meta["dlkdd"]["input"]["shape"] == [-1, 3, 4, 16, 16] and meta["dlkdd"]["input"]["range"] == [0.0, 1.0]
    model, m = load_student(untrained)
    clips = [SAMPLE / c / f"{c}_{k}.mp4" for c in ("Drink", "Pour", "Run") for k in (2, 3)]
    x = torch.cat([video_inputs(str(p), m, clips=2, crops=1) for p in clips])  # 12 real dark clips
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (x[:1], x[:5], x):  # the batch axis is dynamic
        got = session.run(None, {"clip": batch.numpy()})[0]
        with torch.no_grad():
            want = model(batch).numpy()
        assert got.shape == (len(batch), 6) and np.abs(got - want).max() <= 1e-4


def test_export_verb_picks_the_format(untrained, tmp_path):
    pytest.importorskip("onnxruntime")
    for name in ("student.onnx", "student.pt"):
        r = _cli(["export", str(tmp_path / name)], tmp_path / "cache", untrained)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "student.onnx").read_bytes()[:1] != b"P"  # protobuf, not a zip (TorchScript)
    assert (tmp_path / "student.pt").read_bytes()[:2] == b"PK"


def test_docs_onnx_snippet_runs_with_onnxruntime_alone(untrained, two_actions, tmp_path):
    """docs/inference.md's lines, run as written, in a process that never imports dlkdd or torch."""
    pytest.importorskip("onnxruntime")
    from dlkdd.pipeline.inference.export import export_onnx
    export_onnx(untrained, tmp_path / "student.onnx")
    (tmp_path / "night.mp4").symlink_to(two_actions["path"])
    page = (REPO / "docs" / "inference.md").read_text()
    code = re.search(r"<!-- onnx-snippet -->\n```python\n(.*?)```", page, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    check = code + "\nassert not [m for m in sys.modules if m.split('.')[0] in ('dlkdd', 'torch')]\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + check], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, prob = proc.stdout.split()
    assert name in CLASSES and 0 < float(prob) <= 1


def test_progress_bar_shows_frames_per_second_and_eta_on_a_terminal_only(untrained, two_actions):
    from rich.console import Console
    shown = {}
    for name, terminal in (("tty", True), ("pipe", False)):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=150)
        res = list(infer.predict_many_windows(untrained, [str(two_actions["path"])], 0.4, 0.2, batch=1,
                                              console=console))[0]
        assert len(res["windows"]) == count_windows(two_actions["frames"], two_actions["fps"], 0.4, 0.2)
        shown[name] = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "drink-then-run.mp4" in shown["tty"] and f"/{two_actions['frames']}" in shown["tty"]
    assert re.search(r"\d+(\.\d)? frames/s", shown["tty"]) and re.search(r"\d:\d\d:\d\d", shown["tty"])  # rate, ETA
    assert shown["pipe"] == ""  # logs and pipes get no bar
