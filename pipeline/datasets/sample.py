"""Deterministic synthetic *dark action* dataset (the bundled `data/sample`), with a
normal-light counterpart (`data/sample/day`) for pretraining.

Classes differ only by the actor's **motion** (direction, speed, rhythm,
trajectory, growth, rotation); its colour, shape, size and start position, the
textured background, the distractors and the camera shake are drawn per video
from the same distributions for every class, so one frame does not give the
class away. The rendered scene is then exposed dark (mean ~5 % of full scale)
through a Poisson-Gaussian sensor model and H.264-encoded, so the raw dark
input is genuinely harder than an enhanced one while staying learnable. The day
set renders other scenes (its own seed stream) with the same generator at normal
exposure and light noise: only the light differs, as between a camera's day and
night footage.

Layout follows ARID: `<Class>/<Class>_<n>.mp4`, `splits/{train,test}.txt`
(`idx<TAB>label<TAB>Class/Class_n.mp4`) and `classes.txt`; the same under `day/`.

    dlkdd sample data/sample
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..engine.atomic import atomic_path, write_bytes

# ARID's action words, in a fixed order; `make_sample(classes=k)` takes the first k.
CLASS_ORDER = ("Drink", "Jump", "Pick", "Pour", "Push", "Run",
               "Sit", "Stand", "Turn", "Walk", "Wave")
CRF = 18  # x264 constant rate factor: ~9 KB per video; at 23 the codec erased most of the dark motion (measured)
CONTRAST = (0.45, 0.65)  # actor vs background contrast; at 0.18-0.35 no model beat chance on the test split (measured)
FPS_CHOICES = (15, 25)
SHAKE_PX = 2  # largest camera-shake offset in pixels (at size 64)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# ---------------------------------------------------------------- motions
# Each motion maps frame times t (0..T-1) to the actor's offset from its start
# (dx, dy in units of the frame size), a scale factor and a rotation (radians).
# Speeds are per frame, so they do not depend on the container's frame rate.

def _still(t):
    z = np.zeros_like(t)
    return z, z.copy(), np.ones_like(t), z.copy()


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _drink(t, rng):  # stationary, pulsing rhythm (sips)
    dx, dy, _, rot = _still(t)
    period, phase = rng.uniform(7, 11), rng.uniform(0, 2 * np.pi)
    return dx, dy, 1 + 0.25 * np.sin(2 * np.pi * t / period + phase), rot


def _jump(t, rng):  # repeated upward hops, sharp at the ground
    dx, _, scale, rot = _still(t)
    height, period = rng.uniform(0.15, 0.22), rng.uniform(8, 12)
    dy = -height * np.abs(np.sin(np.pi * t / period + rng.uniform(0, np.pi)))
    return dx, dy, scale, rot


def _pick(t, rng):  # one dip down and back up
    dx, _, scale, rot = _still(t)
    n = len(t)
    start, dur = rng.uniform(0, 0.2) * n, rng.uniform(0.6, 0.8) * n
    dy = rng.uniform(0.2, 0.3) * np.sin(np.pi * np.clip((t - start) / dur, 0, 1))
    return dx, dy, scale, rot


def _pour(t, rng):  # circular orbit, about one revolution, either sense
    _, _, scale, rot = _still(t)
    radius = rng.uniform(0.12, 0.18)
    omega = rng.choice([-1, 1]) * 2 * np.pi / (len(t) * rng.uniform(0.8, 1.2))
    phase = rng.uniform(0, 2 * np.pi)
    dx = radius * (np.cos(omega * t + phase) - np.cos(phase))
    dy = radius * (np.sin(omega * t + phase) - np.sin(phase))
    return dx, dy, scale, rot


def _push(t, rng):  # approaching: grows steadily
    dx, dy, _, rot = _still(t)
    growth = rng.uniform(0.5, 0.8)
    return dx, dy, 0.75 * np.exp(growth * t / len(t)), rot


def _run(t, rng):  # fast horizontal translation, either direction
    _, dy, scale, rot = _still(t)
    return rng.choice([-1, 1]) * rng.uniform(0.022, 0.03) * t, dy, scale, rot


def _sit(t, rng, sign=1.0):  # one move down (sign=-1: up), then still
    dx, _, scale, rot = _still(t)
    n = len(t)
    start, dur = rng.uniform(0, 0.35) * n, rng.uniform(0.3, 0.5) * n
    dy = sign * rng.uniform(0.2, 0.3) * _smoothstep((t - start) / dur)
    return dx, dy, scale, rot


def _stand(t, rng):
    return _sit(t, rng, sign=-1.0)


def _turn(t, rng):  # rotates in place, half a turn or more
    dx, dy, scale, _ = _still(t)
    return dx, dy, scale, rng.choice([-1, 1]) * rng.uniform(1.0, 1.5) * np.pi * t / len(t)


def _walk(t, rng):  # slow horizontal translation with a gait bob
    _, _, scale, rot = _still(t)
    dx = rng.choice([-1, 1]) * rng.uniform(0.008, 0.012) * t
    dy = -0.025 * np.abs(np.sin(np.pi * t / rng.uniform(3.5, 4.5)))
    return dx, dy, scale, rot


def _wave(t, rng):  # fast horizontal oscillation
    _, dy, scale, rot = _still(t)
    amp, period = rng.uniform(0.08, 0.12), rng.uniform(5, 8)
    return amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)), dy, scale, rot


MOTIONS = {"Drink": _drink, "Jump": _jump, "Pick": _pick, "Pour": _pour,
           "Push": _push, "Run": _run, "Sit": _sit, "Stand": _stand,
           "Turn": _turn, "Walk": _walk, "Wave": _wave}


# ---------------------------------------------------------------- rendering

def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (h, w, c) grid to (size, size, c)."""
    h, w = grid.shape[:2]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bot = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def _colour(rng, lum: float) -> np.ndarray:
    """A random hue scaled to the given luminance."""
    c = rng.uniform(0.25, 1.0, 3).astype(np.float32)
    return np.clip(c * lum / float(LUMA @ c), 0.0, 1.0)


def _ellipse_alpha(yy, xx, cy, cx, a, b, angle):
    """Soft (about 1 px anti-aliased) ellipse coverage."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - r) * min(a, b) + 0.5, 0.0, 1.0)[..., None]


def _background(rng, size: int, level: float) -> np.ndarray:
    """Smooth multi-octave noise, a gradient and a few static shapes."""
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for cells, amp in ((3, 0.12), (6, 0.08), (12, 0.05)):
        img += amp * _upsample(rng.uniform(-1, 1, (cells, cells, 3)), size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * np.pi)
    img += (0.12 * ((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang)))[..., None]
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(0.05, 0.2, 2) * size
        alpha = _ellipse_alpha(yy * size, xx * size, cy, cx, a, b, rng.uniform(0, np.pi))
        img = img * (1 - alpha) + alpha * (img + rng.uniform(-0.15, 0.15))
    return np.clip(level * tint + img, 0.0, 1.0)


def _shake(rng, frames: int, px: int) -> np.ndarray:
    """Smooth random walk of integer (dy, dx) offsets within +-px."""
    walk = np.cumsum(rng.normal(0, 0.4, (frames, 2)), axis=0)
    walk -= walk.mean(axis=0)
    return np.clip(np.round(walk), -px, px).astype(int)


def _place(rng, offsets: np.ndarray, extent: float, size: int) -> float:
    """A random start coordinate keeping the whole trajectory inside the frame."""
    lo, hi = extent - offsets.min(), size - extent - offsets.max()
    return float(rng.uniform(lo, hi)) if hi > lo else (lo + hi) / 2


def render_video(motion: str, rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """Render a clean (bright, noise-free) clip as float32 (T, H, W, 3) in [0, 1]."""
    t = np.arange(frames, dtype=np.float64)
    shake_px = max(1, round(SHAKE_PX * size / 64))
    # Appearance first, in the same draw order for every class.
    level = rng.uniform(0.25, 0.5)
    bg = _background(rng, size + 2 * shake_px, level)
    contrast = rng.uniform(*CONTRAST) * (1 if rng.random() < 0.75 else -1)
    actor_rgb = _colour(rng, np.clip(level + contrast, 0.05, 0.95))
    a = rng.uniform(0.10, 0.16) * size
    b = a * rng.uniform(0.45, 0.7)
    angle0 = rng.uniform(0, np.pi)
    head_rgb = _colour(rng, np.clip(level + contrast * rng.uniform(0.6, 1.4), 0.05, 0.95))
    n_distract = int(rng.integers(1, 3))
    distractors = []
    for _ in range(n_distract):
        pos = rng.uniform(0.1, 0.9, 2) * size
        speed = rng.uniform(0.0, 0.02) * size
        heading = rng.uniform(0, 2 * np.pi)
        distractors.append(dict(
            pos=pos, vel=speed * np.array([np.sin(heading), np.cos(heading)]),
            r=rng.uniform(0.05, 0.09) * size, square=rng.random() < 0.5,
            rgb=_colour(rng, np.clip(level + rng.uniform(-0.25, 0.3), 0.05, 0.95)),
            wobble=rng.uniform(0, 0.04) * size, wobble_period=rng.uniform(4, 16),
            front=rng.random() < 0.5))
    light_c = rng.uniform(0.1, 0.9, 2) * size
    light_s = rng.uniform(0.4, 0.9) * size
    light_floor = rng.uniform(0.15, 0.45)  # uneven lighting: shadows hide detail
    shake = _shake(rng, frames, shake_px)
    # Then the class's motion.
    dx, dy, scale, rot = MOTIONS[motion](t, rng)
    extent = (a + 0.5 * b) * scale.max()  # body semi-axis plus head
    cx = _place(rng, dx * size, extent, size) + dx * size
    cy = _place(rng, dy * size, extent, size) + dy * size

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    light = (light_floor + (1 - light_floor) * np.exp(-((yy - light_c[0]) ** 2 + (xx - light_c[1]) ** 2)
                                   / (2 * light_s ** 2)))[..., None]
    video = np.empty((frames, size, size, 3), np.float32)
    for i in range(frames):
        sy, sx = shake[i] + shake_px
        img = bg[sy:sy + size, sx:sx + size].copy()
        front = [d for d in distractors if d["front"]]
        back = [d for d in distractors if not d["front"]]
        for d in back:
            img = _draw_distractor(img, d, i, yy, xx, size)
        ang = angle0 + rot[i]
        aa, bb = a * scale[i], b * scale[i]
        body = _ellipse_alpha(yy, xx, cy[i], cx[i], aa, bb, ang)
        img = img * (1 - body) + body * actor_rgb
        hy, hx = cy[i] + aa * np.sin(ang), cx[i] + aa * np.cos(ang)
        head = _ellipse_alpha(yy, xx, hy, hx, 0.5 * bb, 0.5 * bb, 0.0)
        img = img * (1 - head) + head * head_rgb
        for d in front:
            img = _draw_distractor(img, d, i, yy, xx, size)
        video[i] = img * light
    return video


def _draw_distractor(img, d, i, yy, xx, size):
    pos = d["pos"] + d["vel"] * i
    pos = pos + d["wobble"] * np.sin(2 * np.pi * i / d["wobble_period"])
    pos = size - np.abs(size - np.abs(pos) % (2 * size))  # bounce off the edges
    if d["square"]:
        dist = np.maximum(np.abs(yy - pos[0]), np.abs(xx - pos[1]))
        alpha = np.clip(d["r"] - dist + 0.5, 0.0, 1.0)[..., None]
    else:
        alpha = _ellipse_alpha(yy, xx, pos[0], pos[1], d["r"], d["r"], 0.0)
    return img * (1 - alpha) + alpha * d["rgb"]


# Sensor exposures: the clean clip's mean is scaled to `mean` (share of full scale);
# photon counts are Poisson at `gain` digital levels per photo-electron, plus Gaussian
# read noise of `read` levels; then rounding and clipping to uint8.
EXPOSURES = {
    # night: a high-ISO small sensor, 3.5-7 % mean
    "dark": dict(mean=(0.035, 0.07), gain=(0.4, 0.9), read=(1.0, 2.0)),
    # daylight: the same scenes at normal exposure, many photons, light noise
    "day": dict(mean=(0.35, 0.5), gain=(0.03, 0.08), read=(0.3, 0.8)),
}


def expose(video: np.ndarray, rng: np.random.Generator, light: str = "dark") -> np.ndarray:
    """Scale a clean clip to the `light` exposure (see EXPOSURES) with Poisson-Gaussian noise."""
    ranges = EXPOSURES[light]
    target = rng.uniform(*ranges["mean"]) * 255
    gain = rng.uniform(*ranges["gain"])
    read_sigma = rng.uniform(*ranges["read"])
    levels = video * (target / max(float(video.mean()), 1e-6))
    electrons = rng.poisson(levels / gain)
    noisy = electrons * gain + rng.normal(0.0, read_sigma, video.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


# x264 options for identical bytes from identical frames: one thread, and no
# assembly. With its CPU-detected assembly, x264 core 165's AVX-512 macroblock-tree
# code made the same frames encode to different bytes from run to run (heap
# dependent: reads past the data it owns), and its other SIMD levels round the
# macroblock-tree floats differently from each other (AVX2 vs C: other bytes). The
# plain C path is the same on every x86 CPU; it costs ~0.05 s per 64x64 video.
X264_OPTIONS = {"preset": "medium", "threads": "1", "x264-params": "asm=0"}


def rgb_to_yuv420(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 of an RGB uint8 frame in exact integer math.

    The matrix is swscale's default for rgb24 -> yuv420p (what a decoder assumes
    for untagged video); doing it here rather than in swscale keeps CPU-specific
    SIMD rounding out of the bytes. Chroma is taken from each 2x2 block's sum.
    Returns PyAV's yuv420p layout: Y, U, V planes flattened into (H*3/2, W).
    """
    h, w = frame.shape[:2]
    r, g, b = (frame[..., c].astype(np.int32) for c in range(3))
    # Coefficients: (65.481, 128.553, 24.966; -37.797, -74.203, 112; 112, -93.786, -18.214) / 255, in 1/65536.
    y = ((16829 * r + 33039 * g + 6416 * b + (1 << 15)) >> 16) + 16
    r4, g4, b4 = (x.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) for x in (r, g, b))
    u = ((-9714 * r4 - 19070 * g4 + 28784 * b4 + (1 << 17)) >> 18) + 128
    v = ((28784 * r4 - 24103 * g4 - 4681 * b4 + (1 << 17)) >> 18) + 128
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).astype(np.uint8)
    return planes.reshape(h * 3 // 2, w)


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int | None = None) -> None:
    """H.264 yuv420p mp4 via PyAV, bytes determined by the frames alone (see X264_OPTIONS)."""
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4",
                                            container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={
            "crf": str(CRF if crf is None else crf), **X264_OPTIONS})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420(frame), format="yuv420p")
            for packet in stream.encode(yuv):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# ---------------------------------------------------------------- dataset

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
        from decord import VideoReader, cpu

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


# ---------------------------------------------------------------- long videos

def write_long_video(out: Path, clips: list, seconds: float | None = None, fps: int | None = None,
                     size: tuple[int, int] | None = None) -> dict:
    """Concatenate `clips` (video files of one frame size), looping over them until `seconds`
    (default: once through), into one H.264 mp4 at `fps` (default: the first clip's rate),
    its frames scaled to `size` = (width, height) if given.

    Streams frame by frame (never the whole video in memory), so an hour-long test video is
    as cheap to hold as a short one. Returns {"frames", "fps", "seconds", "parts": [(clip,
    first frame, end frame), ...]}: the ground truth of what plays when.
    """
    import av

    out = Path(out)
    with av.open(str(clips[0])) as first:
        rate = int(fps or round(float(first.streams.video[0].average_rate)))
        w, h = first.streams.video[0].width, first.streams.video[0].height
    limit = None if seconds is None else int(round(seconds * rate))
    parts, n = [], 0
    tmp = out.with_name(out.name + ".tmp")
    with av.open(str(tmp), "w", format="mp4") as dst:
        stream = dst.add_stream("libx264", rate=rate, options={"crf": str(CRF), "preset": "veryfast",
                                                               "threads": "1"})
        stream.width, stream.height = size or (w, h)
        stream.pix_fmt = "yuv420p"
        k = 0
        while (limit is None and k < len(clips)) or (limit is not None and n < limit):
            clip = clips[k % len(clips)]
            start = n
            with av.open(str(clip)) as src:
                for frame in src.decode(video=0):
                    if limit is not None and n >= limit:
                        break
                    if (frame.width, frame.height) != (w, h):
                        raise ValueError(f"{clip}: frames are {frame.width}x{frame.height}, "
                                         f"the first clip's are {w}x{h}")
                    image = frame.reformat(*size, format="rgb24") if size else frame.reformat(format="rgb24")
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image.to_ndarray(), format="rgb24")):
                        dst.mux(packet)
                    n += 1
            parts.append((str(clip), start, n))
            k += 1
        for packet in stream.encode():
            dst.mux(packet)
    tmp.replace(out)
    return {"frames": n, "fps": rate, "seconds": n / rate, "parts": parts}
