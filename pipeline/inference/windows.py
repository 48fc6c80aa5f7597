"""Inference where the footage is: sliding windows over long videos, folders and lists of videos.

`dlkdd predict VIDEO --window S --stride S` classifies every window of a video with the
student alone. Decoding streams: the video is opened once with decord (resized while
decoding, as the enhance stage did) and each batch of windows fetches only its T frames per
window with `get_batch`, so memory is bounded by one batch of windows, never by the length
of the video. Nothing here imports the enhancer: the timeline picture's thumbnails are
enhanced by a function the caller passes in, only when it asks for the picture.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..config import EvaluateConfig
from ..datasets.decode import (
    VideoError,
    decord_reason,
    frame_shape,
    open_video,
    precheck,
    resize_shape,
    sample_indices,
)
from ..datasets.folders import is_video
from ..datasets.views import fit_size
from ..engine.progress import progress_bar
from ..training.device import resolve_device
from .predict import _reason, clip_inputs, load_student


class InputListError(UserError, ValueError):
    """A bad `--list` file or no videos to predict (one line)."""


# ------------------------------------------------------------------ which videos

def find_videos(folder) -> list[str]:
    """The videos under `folder`, recursively (hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, n) for n in sorted(filenames) if is_video(n))
    return sorted(found)


def read_video_list(list_file) -> list[str]:
    """Paths in a list file, one per line ('#' comments and blank lines skipped); relative
    paths are read against the list file's folder."""
    path = Path(list_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputListError(f"{path}: list file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise InputListError(f"{path}: not a text list of videos ({e})") from None
    lines = (line.strip() for line in text.splitlines())
    return [str(path.parent / line) for line in lines if line and not line.startswith("#")]


def collect_videos(inputs, list_file=None) -> list[str]:
    """Every video to predict: folders expanded, then the list file's entries. A named file that
    is missing or unreadable stays in the list, to be reported (and skipped) with its reason."""
    videos: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        videos.extend(find_videos(item) if os.path.isdir(item) else [item])
    if list_file is not None:
        videos.extend(read_video_list(list_file))
    if not videos:
        where = ", ".join(map(str, inputs)) or str(list_file)
        raise InputListError(f"{where}: no videos found (extensions: .avi, .mp4, .mkv, .mov, .webm)")
    return videos


# ------------------------------------------------------------------ windows

@dataclass(frozen=True)
class Window:
    start: int  # first source frame
    end: int  # one past the last source frame


def plan_windows(num_frames: int, fps: float, window_s: float, stride_s: float) -> list[Window]:
    """Windows of round(window_s * fps) frames every round(stride_s * fps) frames from frame 0.

    Every frame is covered: when the last full window stops short of the end, one more
    (shorter) window starts a stride later; a video shorter than a window is one window.
    """
    if num_frames <= 0 or not fps > 0:
        raise ValueError(f"cannot cut windows from {num_frames} frames at {fps} fps")
    win = max(1, round(window_s * fps))
    step = max(1, round(stride_s * fps))
    if num_frames <= win:
        return [Window(0, num_frames)]
    windows = [Window(s, s + win) for s in range(0, num_frames - win + 1, step)]
    tail = windows[-1].start + step
    if windows[-1].end < num_frames and tail < num_frames:
        windows.append(Window(tail, num_frames))
    return windows


def window_frames(w: Window, T: int) -> np.ndarray:
    """The T source frames a window is classified from: segment-based uniform sampling inside it."""
    return w.start + sample_indices(w.end - w.start, T, 1)[0]


class VideoStream:
    """One video open for random access, frames decoded at the model's clip size (H, W)."""

    def __init__(self, path, short_side: int, size: tuple[int, int], num_threads: int = 1):
        self.path = os.fspath(path)
        precheck(self.path)
        vr = open_video(self.path, num_threads=num_threads)
        h, w = frame_shape(vr, self.path)
        h2, w2 = resize_shape(h, w, short_side)
        if (h2, w2) != (h, w):  # decord resizes while decoding: full-size frames never exist
            vr = open_video(self.path, width=w2, height=h2, num_threads=num_threads)
        self.vr, self.size = vr, tuple(size)
        self.num_frames = len(vr)
        try:
            self.fps = float(vr.get_avg_fps())
        except Exception as e:
            raise VideoError(f"{self.path}: {decord_reason(e)}") from None
        if not self.fps > 0 or not math.isfinite(self.fps):
            raise VideoError(f"{self.path}: no usable frame rate ({self.fps})")

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (len(indices), H, W, 3); each distinct frame decoded once."""
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            batch = self.vr.get_batch(unique.tolist())
        except Exception as e:  # a file damaged past its first frames
            raise VideoError(f"{self.path}: {decord_reason(e)}") from None
        batch = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        batch = fit_size(batch[None], self.size)[0]
        return batch[inverse.reshape(-1)]


@torch.inference_mode()
def classify_windows(model, meta: dict, stream: VideoStream, windows: list[Window], crops: int = 1,
                     batch: int = 8, device="cpu", thumbnails: int = 0,
                     advance: Callable[[int], None] | None = None,
                     scale: float = EvaluateConfig.crop_scale) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(probabilities (windows, classes), {window: its middle frame} for `thumbnails` evenly spread
    windows). Softmax is averaged over `crops` test views (`views.test_views`, side `scale` x the
    short side when crops > 1); `advance(frames)` reports progress."""
    T = int(meta["frames"])
    probs = np.empty((len(windows), int(meta["num_classes"])), np.float32)
    keep = set(np.linspace(0, len(windows) - 1, min(thumbnails, len(windows))).round().astype(int).tolist())
    thumbs: dict[int, np.ndarray] = {}
    done_to = 0
    for first in range(0, len(windows), batch):
        group = windows[first:first + batch]
        frames = stream.frames(np.concatenate([window_frames(w, T) for w in group])).reshape(
            len(group), T, *stream.size, 3)
        for k in range(len(group)):
            if first + k in keep:
                thumbs[first + k] = frames[k, T // 2].copy()
        x = clip_inputs(frames, meta, crops, scale).to(device)
        p = torch.softmax(model(x).float(), dim=1).reshape(len(group), crops, -1).mean(dim=1)
        probs[first:first + len(group)] = p.cpu().numpy()
        if advance is not None:
            advance(group[-1].end - done_to)
            done_to = group[-1].end
    return probs, thumbs


def window_rows(windows: list[Window], probs: np.ndarray, fps: float, classes: list[str]) -> list[dict]:
    """One dict per window: start and end in seconds, top class and runner-up with probabilities."""
    rows = []
    for w, p in zip(windows, probs):
        order = np.argsort(-p, kind="stable")
        second = order[1] if len(order) > 1 else order[0]
        rows.append({"start": round(w.start / fps, 3), "end": round(w.end / fps, 3),
                     "class": classes[order[0]], "prob": round(float(p[order[0]]), 6),
                     "runner_up": classes[second], "runner_up_prob": round(float(p[second]), 6),
                     "probs": [round(float(q), 6) for q in p]})
    return rows


def merge_segments(rows: list[dict], min_prob: float = 0.0) -> list[dict]:
    """Runs of consecutive windows with the same top class at probability >= min_prob.

    Window i owns the time from the midpoint between its centre and its neighbours' (the first
    from its start, the last to its end), so segments tile the video without overlaps however
    windows overlap; a window below min_prob belongs to no segment.
    """
    if not rows:
        return []
    centres = [(r["start"] + r["end"]) / 2 for r in rows]
    bounds = [rows[0]["start"]] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [rows[-1]["end"]]
    segments: list[dict] = []
    previous_kept = False
    for i, r in enumerate(rows):
        kept = r["prob"] >= min_prob
        if kept and previous_kept and segments[-1]["class"] == r["class"]:
            seg = segments[-1]
            seg["end"], seg["windows"], seg["_sum"] = bounds[i + 1], seg["windows"] + 1, seg["_sum"] + r["prob"]
        elif kept:
            segments.append({"start": bounds[i], "end": bounds[i + 1], "class": r["class"],
                             "windows": 1, "_sum": r["prob"]})
        previous_kept = kept
    for seg in segments:
        seg["prob"] = round(seg.pop("_sum") / seg["windows"], 6)
        seg["start"], seg["end"] = round(seg["start"], 3), round(seg["end"], 3)
    return segments


def predict_video_windows(model, meta: dict, path: str, window_s: float, stride_s: float,
                          min_prob: float = 0.0, crops: int = 1, batch: int = 8, device="cpu",
                          thumbnails: int = 0, console=None, scale: float = EvaluateConfig.crop_scale) -> dict:
    """The timeline of one video: {"video", "fps", "frames", "duration", "window", "stride",
    "classes", "windows": [...], "segments": [...]}, plus "_thumbnails" ({window: frame}) for the
    picture (`public` drops it before printing). VideoError if unreadable."""
    H, W = int(meta["H"]), int(meta["W"])
    stream = VideoStream(path, min(H, W), (H, W))  # decoded as predict_videos decodes a whole video
    windows = plan_windows(stream.num_frames, stream.fps, window_s, stride_s)
    with progress_bar(console, Path(path).name[-30:], stream.num_frames, unit="frames") as update:
        done = [0]

        def advance(frames: int) -> None:
            done[0] += frames
            update(done[0])
        probs, thumbs = classify_windows(model, meta, stream, windows, crops, batch, device, thumbnails, advance,
                                         scale)
    classes = list(meta["classes"])
    rows = window_rows(windows, probs, stream.fps, classes)
    return {"video": path, "fps": round(stream.fps, 4), "frames": stream.num_frames,
            "duration": round(stream.num_frames / stream.fps, 3), "window": window_s, "stride": stride_s,
            "min_prob": min_prob, "classes": classes, "windows": rows,
            "segments": merge_segments(rows, min_prob), "_thumbnails": thumbs}


def predict_many_windows(student_dir, paths: list[str], window_s: float, stride_s: float,
                         min_prob: float = 0.0, crops: int = 1, batch: int = 8, device="cpu",
                         thumbnails: int = 0, console=None, scale: float = EvaluateConfig.crop_scale):
    """Yield each video's timeline, or {"video", "error"} for one that cannot be read (then go on).
    On a terminal `console`, a progress bar per video shows frames done, frames/s and the ETA."""
    if not window_s > 0 or not stride_s > 0:
        raise InputListError(f"--window and --stride must be positive seconds, got {window_s} and {stride_s}")
    device = resolve_device(device)
    model, meta = load_student(student_dir, device)
    for path in paths:
        try:
            yield predict_video_windows(model, meta, str(path), window_s, stride_s, min_prob, crops, batch,
                                        device, thumbnails, console, scale)
        except VideoError as e:
            yield {"video": str(path), "error": _reason(e, str(path))}


def public(result: dict) -> dict:
    """A result without its in-memory parts (keys starting with "_")."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


# ------------------------------------------------------------------ output

def clock(seconds: float) -> str:
    """h:mm:ss.s"""
    tenths = int(round(seconds * 10))
    h, rest = divmod(tenths, 36000)
    m, rest = divmod(rest, 600)
    return f"{h}:{m:02d}:{rest / 10:04.1f}"


def timeline_text(result: dict, segments: bool) -> str:
    """A readable timeline: one line per window, or per segment with `segments`."""
    head = (f"{result['video']}: {clock(result['duration'])}, {len(result['windows'])} windows of "
            f"{result['window']:g} s every {result['stride']:g} s")
    if segments:
        lines = [f"  {clock(s['start'])} - {clock(s['end'])}  {s['class']:<12} mean {s['prob']:.3f}  "
                 f"({s['windows']} window{'s' if s['windows'] != 1 else ''})" for s in result["segments"]]
        head += f"; {len(result['segments'])} segments at probability >= {result['min_prob']:g}"
    else:
        lines = [f"  {clock(r['start'])} - {clock(r['end'])}  {r['class']:<12} {r['prob']:.3f}  "
                 f"(runner-up {r['runner_up']} {r['runner_up_prob']:.3f})" for r in result["windows"]]
    return "\n".join([head, *lines])


CSV_COLUMNS = {
    "videos": ["video", "class", "prob", "runner_up", "runner_up_prob", "error"],
    "windows": ["video", "start", "end", "class", "prob", "runner_up", "runner_up_prob", "error"],
    "segments": ["video", "start", "end", "class", "prob", "windows", "error"],
}


def csv_rows(results: list[dict], kind: str) -> list[dict]:
    """Rows of `kind` ("videos": one per video, "windows", "segments"); a failed video is one row
    with its error and the other fields empty."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"video": r["video"], "error": r["error"]})
        elif kind == "videos":
            top = r["top"]
            second = top[1] if len(top) > 1 else top[0]
            rows.append({"video": r["video"], "class": top[0]["class"], "prob": top[0]["prob"],
                         "runner_up": second["class"], "runner_up_prob": second["prob"]})
        else:
            rows.extend({"video": r["video"], **{k: row[k] for k in CSV_COLUMNS[kind][1:-1]}}
                        for row in r[kind])
    return rows


def to_csv(results: list[dict], kind: str) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS[kind], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(results, kind))
    return buf.getvalue()


def timeline_paths(out: Path, videos: list[str]) -> list[Path]:
    """`out` for one video; `out-<video stem>.png` (made unique) for each of several."""
    out = Path(out)
    if len(videos) == 1:
        return [out]
    paths, seen = [], set()
    for v in videos:
        name = f"{out.stem}-{Path(v).stem}"
        k, unique = 1, name
        while unique in seen:
            k += 1
            unique = f"{name}-{k}"
        seen.add(unique)
        paths.append(out.with_name(unique + (out.suffix or ".png")))
    return paths
