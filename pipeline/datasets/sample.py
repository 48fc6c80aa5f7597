"""The bundled sample dataset (`data/sample`): synthetic *dark action* videos, deterministic
for a seed, and their normal-light counterpart (`data/sample/day`) for pretraining, in ARID's
layout: `<Class>/<Class>_<n>.mp4`, `splits/{train,test}.txt` (`idx<TAB>label<TAB>Class/Class_n.mp4`)
and `classes.txt`, the same under `day/`. Scenes come from scenes.py, bytes from encode.py; the
day set draws other scenes (its own seed stream), so only the light differs, as between a
camera's day and night footage.

The same generator also writes data shaped like the real sets (`make_arid_like`,
`make_dark48_like`): their frame size, container and codec, file naming and split lists, so the
presets in configs/ and the real-size test read what the tool exists for.

    dlkdd sample data/sample
    dlkdd sample --like arid /tmp/arid-like
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from decord import VideoReader, cpu

from ...errors import UserError
from ..engine.atomic import write_bytes
from .encode import CRF, write_avi, write_mp4
from .expected import ARID_CLASSES
from .scenes import expose, render_video

# ARID's action words, in ARID's label order; `make_sample(classes=k)` takes the first k.
CLASS_ORDER = ARID_CLASSES
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


# ---------------------------------------------------------------- shaped like the real sets

LIKES = ("sample", "arid", "dark48")  # what `dlkdd sample --like` writes

# ARID v1.0 as its authors distribute it (xuyu0010/ARID_v1, dataset/ARID/raw): one folder per
# class of MPEG-4 .avi clips named <Class>_<A>_<B>.avi (clip B cut from recording A; a recording's
# clips share person and place), three splits as list_cvt/ARID_split<k>_{train,test}.txt
# (`idx<TAB>label<TAB>Class/Class_A_B.avi`, each test list holding whole recordings) and the labels'
# names in list_cvt/mapping_table.txt (`label<TAB>Class`, the classes in alphabetical order).
ARID_LIST_DIR = "list_cvt"
ARID_SPLITS = (1, 2, 3)
ARID_FPS = 30  # ARID's clips are 30 fps
ARID_SIZE = 240  # rows: ARID's frames are 320x240
ARID_FRAMES = (48, 72)  # frames per clip: ARID's 3,784 clips last 8,721 s in all, 2.3 s (69 frames) on average
ARID_TAG = 1001  # seed-stream tag: an ARID-shaped set never shares a draw with the sample
MAPPING_TABLE = f"{ARID_LIST_DIR}/mapping_table.txt"

# Dark-48: clips cut from YouTube videos, named <youtube-id>_N, listed MMAction2-style
# (`Class/<youtube-id>_N.mp4 label`). The list file names follow MMAction2's
# <dataset>_<split>_list_videos.txt (this project's choice: the distributed names were not found),
# one split; the frames are 16:9 (this project's choice: YouTube's aspect) and H.264 at 30 fps.
DARK48_LISTS = {"train": "dark48_train_list_videos.txt", "test": "dark48_test_list_videos.txt"}
DARK48_CLASSES = 48  # the real set's class count; the generator draws at most len(CLASS_ORDER) motions
DARK48_SIZE = 180  # rows: 320x180
DARK48_FPS = 30
# x264 CRF of the Dark-48-shaped clips. Measured on a dark 320x180 48-frame Run clip: crf 18 writes
# 172 KB (it keeps the sensor noise), 23 12 KB, 28 5 KB; the decoded motion (frame minus the clip
# mean) correlates with the clean scene's at 0.91, 0.99, 0.97: 23 keeps the motion best. (At the
# sample's 64 px, 23 erased it: encode.CRF.)
DARK48_CRF = 23
DARK48_TAG = 4848
YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # 11 of them make an id


def arid_list(split: int, part: str) -> str:
    """The path, relative to the root, of ARID's `part` ("train" | "test") list of split 1, 2 or 3."""
    return f"{ARID_LIST_DIR}/ARID_split{split}_{part}.txt"


def wide(size: int, aspect: float) -> int:
    """The even frame width for `size` rows at `aspect` = width / height (240 rows at 4:3: 320)."""
    return 2 * round(size * aspect / 2)


def _check_like(classes: int, groups: int, clips: int, size: int, frames, min_groups: int, group: str,
                why: str) -> None:
    """`group`: what holds a class's clips ("recording", "video"); `why` it needs `min_groups` of them."""
    if not 1 <= classes <= len(CLASS_ORDER):
        raise SampleError(f"classes must be 1..{len(CLASS_ORDER)} (the generator's motions), got {classes}")
    if groups < min_groups:
        raise SampleError(f"{group}s per class must be at least {min_groups} ({why}), got {groups}")
    if clips < 1:
        raise SampleError(f"clips per {group} must be at least 1, got {clips}")
    if size < 16 or size % 2:
        raise SampleError(f"size must be even and at least 16 (4:2:0 chroma), got {size}")
    if not 2 <= frames[0] <= frames[1]:
        raise SampleError(f"frames must be a range (lo, hi) with 2 <= lo <= hi, got {frames}")


def _clear_like(root: Path, ext: str, lists) -> None:
    """Remove the videos and lists an earlier call wrote under `root` (nothing else)."""
    for name in CLASS_ORDER:
        for stale in (root / name).glob(f"*{ext}"):
            stale.unlink()
        if (root / name).is_dir() and not any((root / name).iterdir()):
            (root / name).rmdir()
    for rel in lists:
        (root / rel).unlink(missing_ok=True)


def _render_clip(name: str, scene_seed: list, clip_rng, size: int, width: int, frames) -> np.ndarray:
    """One dark clip of a recording: the recording's scene (a fresh generator on `scene_seed`, so every
    clip of it sees the same place and actor), this clip's motion, length and sensor noise."""
    length = int(clip_rng.integers(frames[0], frames[1] + 1))
    clean = render_video(name, np.random.default_rng(scene_seed), size, length, width=width, motion_rng=clip_rng)
    return expose(clean, clip_rng, "dark")


def make_arid_like(out_dir, seed: int = 0, classes: int = len(CLASS_ORDER), recordings_per_class: int = 4,
                   clips_per_recording: int = 2, size: int = ARID_SIZE, frames=ARID_FRAMES) -> dict:
    """A dark set in ARID v1.0's layout under `out_dir` (see ARID_LIST_DIR): `classes` of ARID's 11
    (alphabetical, labelled as ARID labels them), each `recordings_per_class` recordings of
    `clips_per_recording` MPEG-4 .avi clips at 30 fps, `size` rows at 4:3 (320x240 by default), and
    three splits each testing a different recording of every class. No classes.txt: as with the real
    set, class names come from the folders. Returns `like_stats` plus the seconds taken."""
    _check_like(classes, recordings_per_class, clips_per_recording, size, frames, len(ARID_SPLITS),
                "recording", "each of the 3 splits tests another recording")
    start, root = time.perf_counter(), Path(out_dir)
    names = sorted(CLASS_ORDER[:classes])
    lists = [arid_list(k, part) for k in ARID_SPLITS for part in ("train", "test")] + [MAPPING_TABLE]
    _clear_like(root, ".avi", lists)
    width = wide(size, 4 / 3)
    rows = {k: {"train": [], "test": []} for k in ARID_SPLITS}
    for label, name in enumerate(names):
        ci = CLASS_ORDER.index(name)
        tested = np.random.default_rng([seed, ARID_TAG, ci]).permutation(recordings_per_class) + 1
        for rec in range(1, recordings_per_class + 1):
            for clip in range(1, clips_per_recording + 1):
                rel = f"{name}/{name}_{rec}_{clip}.avi"
                video = _render_clip(name, [seed, ARID_TAG, ci, rec], np.random.default_rng(
                    [seed, ARID_TAG, ci, rec, clip]), size, width, frames)
                write_avi(root / rel, video, ARID_FPS)
                for k in ARID_SPLITS:
                    rows[k]["test" if rec == tested[k - 1] else "train"].append((label, rel))
    for k in ARID_SPLITS:  # the lists last: an interrupted run leaves no list
        for part, entries in rows[k].items():
            entries.sort(key=lambda row: (row[0], row[1]))  # by label, then path as text (ARID's order)
            text = "".join(f"{i}\t{label}\t{rel}\n" for i, (label, rel) in enumerate(entries))
            write_bytes(root / arid_list(k, part), text.encode())
    write_bytes(root / MAPPING_TABLE, "".join(f"{i}\t{n}\n" for i, n in enumerate(names)).encode())
    stats = like_stats(root, {f"split{k}_{part}": arid_list(k, part)
                              for k in ARID_SPLITS for part in ("train", "test")})
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character id in YouTube's alphabet."""
    return "".join(YOUTUBE_ALPHABET[i] for i in rng.integers(0, len(YOUTUBE_ALPHABET), 11))


def make_dark48_like(out_dir, seed: int = 0, classes: int = 6, videos_per_class: int = 4,
                     clips_per_video: int = 2, size: int = DARK48_SIZE, frames=ARID_FRAMES) -> dict:
    """A dark set in Dark-48's naming under `out_dir`: per class `videos_per_class` YouTube videos (a
    scene each) of `clips_per_video` clips `Class/<youtube-id>_N.mp4` (H.264, 30 fps, `size` rows at
    16:9), listed MMAction2-style in DARK48_LISTS; about a quarter of each class's YouTube videos,
    whole, are its test split. `classes` is at most the generator's 11 motions (the real set has 48)."""
    _check_like(classes, videos_per_class, clips_per_video, size, frames, 2,
                "video", "one YouTube video at least goes to test, one to train")
    start, root = time.perf_counter(), Path(out_dir)
    names = sorted(CLASS_ORDER[:classes])
    _clear_like(root, ".mp4", DARK48_LISTS.values())
    width = wide(size, 16 / 9)
    rows = {"train": [], "test": []}
    for label, name in enumerate(names):
        ci = CLASS_ORDER.index(name)
        held = max(1, round(videos_per_class / 4))
        tested = set(np.random.default_rng([seed, DARK48_TAG, ci]).permutation(videos_per_class)[:held].tolist())
        for v in range(videos_per_class):
            vid = youtube_id(np.random.default_rng([seed, DARK48_TAG, ci, v, 0]))
            for n in range(1, clips_per_video + 1):
                rel = f"{name}/{vid}_{n}.mp4"
                video = _render_clip(name, [seed, DARK48_TAG, ci, v], np.random.default_rng(
                    [seed, DARK48_TAG, ci, v, n]), size, width, frames)
                write_mp4(root / rel, video, DARK48_FPS, DARK48_CRF)
                rows["test" if v in tested else "train"].append((label, rel))
    for part, entries in rows.items():
        write_bytes(root / DARK48_LISTS[part], "".join(f"{rel} {label}\n" for label, rel in entries).encode())
    stats = like_stats(root, DARK48_LISTS)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats


def make_like(like: str, out_dir, **options) -> dict:
    """`dlkdd sample --like`: the bundled-sample generator (`sample`), or data shaped like ARID or Dark-48.
    For dark48 a "recording" is a YouTube video: `recordings_per_class` and `clips_per_recording` are
    its `videos_per_class` and `clips_per_video`."""
    makers = {"sample": make_sample, "arid": make_arid_like, "dark48": make_dark48_like}
    if like not in makers:
        raise SampleError(f"--like {like!r}: expected one of {', '.join(LIKES)}")
    if like == "dark48":
        renamed = {"recordings_per_class": "videos_per_class", "clips_per_recording": "clips_per_video"}
        options = {renamed.get(k, k): v for k, v in options.items()}
    return makers[like](out_dir, **options)


def _list_rows(path: Path) -> list[tuple[int, str]]:
    """(label, path) of an ARID (`idx<TAB>label<TAB>path`) or MMAction (`path label`) list."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            fields = line.split("\t")
            if len(fields) == 3:
                rows.append((int(fields[1]), fields[2]))
            else:
                rel, label = line.rsplit(None, 1)
                rows.append((int(label), rel))
    return rows


def like_stats(root, lists: dict[str, str]) -> dict:
    """Videos, classes, bytes and per-list counts of a set written by make_arid_like / make_dark48_like."""
    root = Path(root)
    listed = {name: _list_rows(root / rel) for name, rel in lists.items()}
    videos = sorted({rel for rows in listed.values() for _, rel in rows})
    names = sorted({rel.split("/")[0] for rel in videos})
    stats = {"classes": len(names), "class_names": names, "videos": len(videos),
             "lists": {name: len(rows) for name, rows in listed.items()},
             "bytes": sum((root / rel).stat().st_size for rel in videos)}
    stats["mb"] = round(stats["bytes"] / 1e6, 3)
    return stats
