"""The bundled sample dataset (`data/sample`): synthetic *dark action* videos, deterministic
for a seed, and their normal-light counterpart (`data/sample/day`) for pretraining, in ARID's
layout: `<Class>/<Class>_<n>.mp4`, `splits/{train,test}.txt` (`idx<TAB>label<TAB>Class/Class_n.mp4`)
and `classes.txt`, the same under `day/`. Scenes come from scenes.py, bytes from encode.py; the
day set draws other scenes (its own seed stream), so only the light differs, as between a
camera's day and night footage.

    dlkdd sample data/sample
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from decord import VideoReader, cpu

from ...errors import UserError
from ..engine.atomic import write_bytes
from .encode import CRF, write_mp4
from .scenes import expose, render_video

# ARID's action words, in a fixed order; `make_sample(classes=k)` takes the first k.
CLASS_ORDER = ("Drink", "Jump", "Pick", "Pour", "Push", "Run",
               "Sit", "Stand", "Turn", "Walk", "Wave")
FPS_CHOICES = (15, 25)
DAY_DIR = "day"  # the normal-light set, a sub-folder of the sample with its own lists
DAY_TAG = 777  # seed-stream tag of the day set: its videos never share a seed with the dark ones
CRFS = {"dark": CRF, "day": 23}  # bright motion survives crf 23 (about half the bytes of 18)
LIST_FILES = ("classes.txt", "splits/train.txt", "splits/test.txt")


class SampleError(UserError, ValueError):
    """A bad make_sample setting (one line)."""


def _video_rng(seed: int, light: str, ci: int, n: int) -> np.random.Generator:
    """The generator of video n of class index ci (n = 0: the class's test-split draw)."""
    return np.random.default_rng([seed, ci, n] if light == "dark" else [seed, DAY_TAG, ci, n])


def _check(classes, videos_per_class, test_per_class, size, frames, day_videos_per_class,
           day_test_per_class) -> None:
    if not 1 <= classes <= len(CLASS_ORDER):
        raise SampleError(f"classes must be 1..{len(CLASS_ORDER)}, got {classes}")
    if not 0 <= test_per_class < videos_per_class:
        raise SampleError("test_per_class must be in [0, videos_per_class)")
    if day_videos_per_class and not 0 <= day_test_per_class < day_videos_per_class:
        raise SampleError("day_test_per_class must be in [0, day_videos_per_class)")
    if size < 16 or size % 2:
        raise SampleError(f"size must be even and at least 16 (H.264 4:2:0), got {size}")
    if not 2 <= frames[0] <= frames[1]:
        raise SampleError(f"frames must be a range (lo, hi) with 2 <= lo <= hi, got {frames}")


def _clear_set(root: Path) -> None:
    """Remove the videos and lists a previous make_sample wrote under `root` (nothing else)."""
    for name in CLASS_ORDER:
        for stale in (root / name).glob("*.mp4"):
            stale.unlink()
        if (root / name).is_dir() and not any((root / name).iterdir()):
            (root / name).rmdir()
    for rel in LIST_FILES:
        (root / rel).unlink(missing_ok=True)


def _write_set(root: Path, names: list[str], seed: int, light: str, videos_per_class: int,
               test_per_class: int, size: int, frames) -> None:
    """Render, expose, encode and list one set (ARID layout) under `root`."""
    _clear_set(root)
    lines = {"train": [], "test": []}
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        ci = CLASS_ORDER.index(name)
        test_ids = set(_video_rng(seed, light, ci, 0).choice(
            np.arange(1, videos_per_class + 1), test_per_class, replace=False).tolist())
        for n in range(1, videos_per_class + 1):
            rng = _video_rng(seed, light, ci, n)
            length = int(rng.integers(frames[0], frames[1] + 1))
            fps = int(rng.choice(FPS_CHOICES))
            clean = render_video(name, rng, size, length)
            rel = f"{name}/{name}_{n}.mp4"
            write_mp4(root / rel, expose(clean, rng, light), fps, CRFS[light])
            lines["test" if n in test_ids else "train"].append((label, rel))
    for split, rows in lines.items():  # the lists last: an interrupted run leaves no list
        text = "".join(f"{i}\t{label}\t{rel}\n" for i, (label, rel) in enumerate(rows))
        write_bytes(root / "splits" / f"{split}.txt", text.encode())
    write_bytes(root / "classes.txt", "".join(f"{n}\n" for n in names).encode())


def make_sample(out_dir, seed: int = 0, classes: int = 6, videos_per_class: int = 47,
                size: int = 64, frames=(16, 24), test_per_class: int = 17,
                day_videos_per_class: int = 50, day_test_per_class: int = 10) -> dict:
    """Generate the dark set under `out_dir` and the day set under `out_dir/day`.

    Both sets render the same classes with the same generator; they differ in
    exposure and noise (EXPOSURES) and in their seeds, so no day video shows a
    scene of the dark set. Returns `sample_stats` of the dark set (with the day
    set's under "day") plus the seconds taken.
    """
    _check(classes, videos_per_class, test_per_class, size, frames, day_videos_per_class,
           day_test_per_class)
    start = time.perf_counter()
    root = Path(out_dir)
    names = sorted(CLASS_ORDER[:classes])
    _write_set(root, names, seed, "dark", videos_per_class, test_per_class, size, frames)
    if day_videos_per_class:
        _write_set(root / DAY_DIR, names, seed, "day", day_videos_per_class, day_test_per_class,
                   size, frames)
    elif (root / DAY_DIR).is_dir():
        _clear_set(root / DAY_DIR)
    stats = sample_stats(root)
    if day_videos_per_class:
        stats["day"] = sample_stats(root / DAY_DIR)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats


def read_split(path) -> list[tuple[int, str]]:
    """Parse an ARID split list into (label, relative path) pairs."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            _, label, rel = line.split("\t")
            rows.append((int(label), rel))
    return rows


def sample_stats(root, decode: bool = True) -> dict:
    """Counts, bytes of the listed files and (decoding with decord) frames and brightness."""
    root = Path(root)
    names = (root / "classes.txt").read_text().split()
    train, test = read_split(root / "splits/train.txt"), read_split(root / "splits/test.txt")
    files = [root / rel for _, rel in train + test] + [root / rel for rel in LIST_FILES]
    stats = {
        "classes": len(names),
        "class_names": names,
        "videos": len({rel for _, rel in train + test}),
        "train": len(train),
        "test": len(test),
        "bytes": sum(p.stat().st_size for p in files),  # listed videos and lists (not the day set)
    }
    stats["mb"] = round(stats["bytes"] / 1e6, 3)
    if decode:
        total, count, frames, per_class, per_video = 0.0, 0, 0, {n: [] for n in names}, []
        for label, rel in train + test:
            vr = VideoReader(str(root / rel), ctx=cpu(0), num_threads=1)
            clip = vr.get_batch(list(range(len(vr)))).asnumpy()
            total += float(clip.sum(dtype=np.float64))
            count += clip.size
            frames += len(clip)
            per_video.append(clip.mean() / 255)
            per_class[names[label]].append(per_video[-1])
        stats["frames_decoded"] = frames
        stats["mean_brightness"] = round(total / max(count, 1) / 255, 4)
        stats["video_brightness"] = [round(float(min(per_video)), 4), round(float(max(per_video)), 4)]
        stats["class_brightness"] = {n: round(float(np.mean(v)), 4) for n, v in per_class.items() if v}
    return stats
